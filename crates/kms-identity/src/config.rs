//! Configuration: which issuers this KMS trusts and for which organizations.

use reqwest::Url;
use serde::Deserialize;

/// How this KMS validates access tokens. Meant to sit in the KMS's TOML
/// configuration as its own table; unknown keys are refused so typos surface.
///
/// ```
/// let cfg: kms_identity::IdentityConfig = serde_json::from_str(r#"{
///     "audience": "kms://kms.example.com",
///     "issuers": [{ "issuer": "https://idp.example.com", "org_domain": "example.com" }]
/// }"#).unwrap();
/// assert_eq!(cfg.leeway_secs, 30);
/// assert_eq!(cfg.issuers[0].user_claim, "sub");
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// This KMS's own audience (e.g. its `kms://` URI). A token's `aud` must be
    /// exactly this value.
    pub audience: String,
    /// The trusted issuers, one per organization.
    pub issuers: Vec<IssuerConfig>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "defaults::leeway_secs")]
    pub leeway_secs: u64,
    /// A token naming an unknown `kid` triggers a key set refetch at most this
    /// often per issuer, in seconds, so made-up kids cannot hammer the IdP.
    #[serde(default = "defaults::jwks_min_refetch_secs")]
    pub jwks_min_refetch_secs: u64,
    /// Key sets older than this are refetched before use, in seconds, so a key
    /// the IdP withdrew stops being accepted. If the refetch fails, the old
    /// keys stay in use.
    #[serde(default = "defaults::jwks_max_age_secs")]
    pub jwks_max_age_secs: u64,
    /// Timeout of each discovery or key set request, in milliseconds.
    #[serde(default = "defaults::http_timeout_ms")]
    pub http_timeout_ms: u64,
    /// Most validated tokens remembered (by hash) until they expire; 0 disables
    /// the cache.
    #[serde(default = "defaults::cache_capacity")]
    pub cache_capacity: usize,
}

/// One trusted token issuer and the organization its users belong to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer URL, compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// Where the issuer's JWKS lives. If absent, it is read from the `jwks_uri`
    /// of `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The organization domain of this issuer's users: user ids are
    /// `name@org_domain`.
    pub org_domain: String,
    /// The claim holding the user name (default `sub`).
    #[serde(default = "defaults::user_claim")]
    pub user_claim: String,
}

mod defaults {
    pub fn leeway_secs() -> u64 {
        30
    }
    pub fn jwks_min_refetch_secs() -> u64 {
        30
    }
    pub fn jwks_max_age_secs() -> u64 {
        600
    }
    pub fn http_timeout_ms() -> u64 {
        3000
    }
    pub fn cache_capacity() -> usize {
        100_000
    }
    pub fn user_claim() -> String {
        "sub".into()
    }
}

impl IdentityConfig {
    /// A configuration with the default timings and cache size.
    pub fn new(audience: impl Into<String>, issuers: Vec<IssuerConfig>) -> Self {
        Self {
            audience: audience.into(),
            issuers,
            leeway_secs: defaults::leeway_secs(),
            jwks_min_refetch_secs: defaults::jwks_min_refetch_secs(),
            jwks_max_age_secs: defaults::jwks_max_age_secs(),
            http_timeout_ms: defaults::http_timeout_ms(),
            cache_capacity: defaults::cache_capacity(),
        }
    }
}

impl IssuerConfig {
    /// An issuer whose key set is found by discovery and whose users are named
    /// by `sub`.
    pub fn new(issuer: impl Into<String>, org_domain: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            jwks_url: None,
            org_domain: org_domain.into(),
            user_claim: defaults::user_claim(),
        }
    }

    /// Sets the JWKS URL (skipping discovery).
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Sets the claim that names the user.
    pub fn with_user_claim(mut self, claim: impl Into<String>) -> Self {
        self.user_claim = claim.into();
        self
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `audience` is empty.
    #[error("identity: audience must not be empty")]
    EmptyAudience,
    /// No issuer is configured, so no token could ever be accepted.
    #[error("identity: at least one issuer must be configured")]
    NoIssuers,
    /// A URL does not parse.
    #[error("identity: {url:?} is not a valid URL")]
    BadUrl {
        /// The URL as configured.
        url: String,
    },
    /// A URL is neither `https` nor `http` to a loopback address.
    #[error("identity: {url:?} must use https (plain http only to loopback)")]
    InsecureUrl {
        /// The URL as configured.
        url: String,
    },
    /// The same issuer appears twice.
    #[error("identity: issuer {issuer:?} is configured twice")]
    DuplicateIssuer {
        /// The issuer.
        issuer: String,
    },
    /// Two issuers name the same org domain; their user ids would collide.
    #[error("identity: org domain {org_domain:?} is given to more than one issuer")]
    SharedOrgDomain {
        /// The org domain.
        org_domain: String,
    },
    /// An org domain is not a plain DNS name.
    #[error("identity: org domain {org_domain:?} is not a DNS name")]
    BadOrgDomain {
        /// The org domain as configured.
        org_domain: String,
    },
    /// A `user_claim` is empty.
    #[error("identity: user_claim of issuer {issuer:?} must not be empty")]
    EmptyUserClaim {
        /// The issuer.
        issuer: String,
    },
    /// The HTTP client could not be built.
    #[error("identity: cannot build the HTTP client: {0}")]
    HttpClient(String),
}

/// Parses a configured URL and refuses cleartext except to loopback.
pub(crate) fn parse_url(url: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|_| ConfigError::BadUrl { url: url.into() })?;
    if !url_allowed(&parsed) {
        return Err(ConfigError::InsecureUrl { url: url.into() });
    }
    Ok(parsed)
}

/// `https`, or `http` to this machine only (tests, sidecar IdPs): key sets
/// fetched in the clear from elsewhere could be swapped on the way.
pub(crate) fn url_allowed(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => url.host_str().is_some_and(|h| {
            let ip = h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
            h.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Lowercases a DNS name, or refuses it.
pub(crate) fn normalize_org_domain(domain: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadOrgDomain { org_domain: domain.into() };
    let labels_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok {
        Ok(domain.to_ascii_lowercase())
    } else {
        Err(bad())
    }
}
