//! The IdP's configuration: TOML, strictly parsed, checked as a whole.
//!
//! See `idp.example.toml` at the crate root for a commented example of every
//! setting. Unknown keys are refused so that typos surface. Secrets may be
//! written in the file (it is a development IdP) or taken from environment
//! variables (`password_env`, `client_secret_env`), read when the
//! configuration is checked.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// Longest id (user, client, subject) accepted.
const MAX_ID_LEN: usize = 256;

/// The whole configuration. Build it from TOML ([`Config::load`],
/// [`Config::from_toml`]) or start from [`Config::default`] and set fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Address to listen on (default `127.0.0.1:8400`). Port 0 picks a free
    /// port (see [`crate::start`]).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// The issuer URL, the `iss` of every token (default `http://<listen>`,
    /// with `127.0.0.1` or `[::1]` for an unspecified listen address).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Where the signing key is kept (default `data`; relative to the config
    /// file's directory when loaded with [`Config::load`]).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// Lifetime of access tokens, in seconds (default 3600).
    #[serde(default = "defaults::access_token_ttl_secs")]
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in seconds (default 30 days).
    #[serde(default = "defaults::refresh_token_ttl_secs")]
    pub refresh_token_ttl_secs: u64,
    /// How long a device authorization may wait for approval, in seconds (default 600).
    #[serde(default = "defaults::device_code_ttl_secs")]
    pub device_code_ttl_secs: u64,
    /// Shortest interval between two polls of one device code, in seconds (default 5).
    #[serde(default = "defaults::device_poll_interval_secs")]
    pub device_poll_interval_secs: u64,
    /// The audiences a token may be requested for; each token names exactly one.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The audience of a token requested without `audience` or `resource`.
    /// Absent: such requests are refused.
    #[serde(default)]
    pub default_audience: Option<String>,
    /// Client ids allowed to use the password, device code and refresh token
    /// grants without a secret (default `["custos-cli"]`).
    #[serde(default = "defaults::public_clients")]
    pub public_clients: Vec<String>,
    /// The users who can sign in.
    #[serde(default)]
    pub users: Vec<User>,
    /// Service clients (bots, services) using the client credentials grant.
    #[serde(default)]
    pub clients: Vec<ServiceClient>,
    /// Browser apps (public, no secret) that sign users in with the
    /// authorization code flow and PKCE at `/authorize`.
    #[serde(default)]
    pub web_clients: Vec<WebClient>,
}

/// A user who can sign in with a password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct User {
    /// The user id: the username at sign-in and the tokens' `sub`, e.g. `alice@acme.test`.
    pub id: String,
    /// The password, in plain text (development only). Exactly one of
    /// `password` and `password_env` must be set.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Display name (the `name` claim of the user's access tokens).
    #[serde(default)]
    pub name: Option<String>,
}

/// A service client: authenticates with a secret and gets tokens for itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceClient {
    /// The client id.
    pub client_id: String,
    /// The secret, in plain text (development only). Exactly one of
    /// `client_secret` and `client_secret_env` must be set.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The `sub` of this client's tokens, e.g. `pollbot@acme.test`. Must not
    /// be a user's id.
    pub subject: String,
}

/// A browser app: its id and the exact redirect URIs it may use. `http` is
/// accepted for loopback hosts only (`localhost`, `*.localhost`, `127.0.0.1`, `[::1]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebClient {
    /// `client_id`, e.g. `custos-web`.
    pub client_id: String,
    /// Where `/authorize` may send the user back to, compared exactly.
    pub redirect_uris: Vec<String>,
}

impl WebClient {
    /// A web client with its redirect URIs.
    pub fn new(client_id: impl Into<String>, redirect_uris: Vec<String>) -> Self {
        Self { client_id: client_id.into(), redirect_uris }
    }

    /// The origins (`scheme://host[:port]`) of its redirect URIs: where the
    /// app runs, and so the origins the token endpoint answers cross-origin.
    pub fn origins(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .redirect_uris
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl User {
    /// A user with a password given in plain text.
    pub fn new(id: impl Into<String>, password: impl Into<String>) -> Self {
        Self { id: id.into(), password: Some(Secret::new(password)), password_env: None, name: None }
    }

    /// A user whose password is in an environment variable.
    pub fn from_env(id: impl Into<String>, password_env: impl Into<String>) -> Self {
        Self { id: id.into(), password: None, password_env: Some(password_env.into()), name: None }
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl ServiceClient {
    /// A service client with a secret given in plain text.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: Some(Secret::new(client_secret)),
            client_secret_env: None,
            subject: subject.into(),
        }
    }

    /// A service client whose secret is in an environment variable.
    pub fn from_env(client_id: impl Into<String>, secret_env: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            client_secret_env: Some(secret_env.into()),
            subject: subject.into(),
        }
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8400))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("data")
    }
    pub fn access_token_ttl_secs() -> u64 {
        3600
    }
    pub fn refresh_token_ttl_secs() -> u64 {
        30 * 24 * 3600
    }
    pub fn device_code_ttl_secs() -> u64 {
        600
    }
    pub fn device_poll_interval_secs() -> u64 {
        5
    }
    pub fn public_clients() -> Vec<String> {
        vec!["custos-cli".into()]
    }
}

impl Default for Config {
    /// The defaults of every setting, with no audience, user or service
    /// client (so not usable until `audiences` is set).
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            issuer: None,
            data_dir: defaults::data_dir(),
            access_token_ttl_secs: defaults::access_token_ttl_secs(),
            refresh_token_ttl_secs: defaults::refresh_token_ttl_secs(),
            device_code_ttl_secs: defaults::device_code_ttl_secs(),
            device_poll_interval_secs: defaults::device_poll_interval_secs(),
            audiences: Vec::new(),
            default_audience: None,
            public_clients: defaults::public_clients(),
            users: Vec::new(),
            clients: Vec::new(),
            web_clients: Vec::new(),
        }
    }
}

/// Why a configuration cannot be used. Messages name the setting and the
/// offending id or URL, never a password or secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or not this schema (unknown key, wrong type, missing key).
    #[error("{}", parse_message(path.as_deref(), location, message))]
    Parse {
        /// The file, if loaded from one.
        path: Option<PathBuf>,
        /// `line L, column C`, when known.
        location: String,
        /// What is wrong (from the TOML parser, without the quoted source line).
        message: String,
    },
    /// `issuer` is not usable.
    #[error("issuer {issuer:?}: {reason}")]
    BadIssuer {
        /// The issuer as configured.
        issuer: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A web client's redirect URI is not usable.
    #[error("web client {client_id:?}: redirect URI {uri:?} {reason}")]
    BadRedirectUri {
        /// The client.
        client_id: String,
        /// The URI as configured.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `issuer` is absent and the listen port is 0, so it cannot be derived
    /// before binding (use [`crate::start`], which derives it from the bound address).
    #[error("issuer must be set when listening on port 0 (or use idp::start, which derives it after binding)")]
    IssuerUnknown,
    /// `audiences` is empty: no token could ever be issued.
    #[error("audiences: at least one audience must be listed")]
    NoAudiences,
    /// An audience is not an absolute URI without spaces.
    #[error("audience {audience:?}: {reason}")]
    BadAudience {
        /// The audience as configured.
        audience: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `default_audience` is not one of `audiences`.
    #[error("default_audience {audience:?} is not listed in audiences")]
    DefaultAudienceNotListed {
        /// The default audience.
        audience: String,
    },
    /// An id (user, client) is empty, too long, or has spaces or control characters.
    #[error("{kind} id {id:?} is not valid: ids are 1 to 256 characters without spaces or control characters")]
    BadId {
        /// `user`, `public client`, `service client`, or `service client subject`.
        kind: &'static str,
        /// The id as configured.
        id: String,
    },
    /// Two users, two clients, or two subjects share an id (compared case-insensitively).
    #[error("{kind} id {id:?} is configured more than once (ids are compared case-insensitively)")]
    Duplicate {
        /// `user`, `client` or `subject`.
        kind: &'static str,
        /// The id given twice.
        id: String,
    },
    /// A service client's subject is a user's id: the service could act as that user.
    #[error("service client {client_id:?} has subject {subject:?}, which is a user's id")]
    SubjectIsUser {
        /// The service client.
        client_id: String,
        /// Its subject.
        subject: String,
    },
    /// A secret is given both in the file and by an environment variable, or not at all.
    #[error("{owner}: set exactly one of {field} and {field}_env")]
    SecretSource {
        /// `user "alice@acme.test"` or `client "pollbot"`.
        owner: String,
        /// `password` or `client_secret`.
        field: &'static str,
    },
    /// A secret's environment variable is unset, empty or not UTF-8.
    #[error("{owner}: environment variable {var} is not set (or empty)")]
    MissingEnv {
        /// `user "alice@acme.test"` or `client "pollbot"`.
        owner: String,
        /// The variable.
        var: String,
    },
    /// A secret is empty.
    #[error("{owner}: the {field} must not be empty")]
    EmptySecret {
        /// `user "alice@acme.test"` or `client "pollbot"`.
        owner: String,
        /// `password` or `client_secret`.
        field: &'static str,
    },
    /// A lifetime or interval is out of range.
    #[error("{setting} = {value} is out of range ({min} to {max})")]
    OutOfRange {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

/// A user or service client with its secret resolved.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedUser {
    pub id: String,
    pub password: Secret,
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ResolvedClient {
    pub client_id: String,
    pub secret: Secret,
    pub subject: String,
}

/// Users and clients with their secrets read (from the file or the environment).
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub users: Vec<ResolvedUser>,
    pub clients: Vec<ResolvedClient>,
}

impl Config {
    /// Reads and checks a config file. A relative `data_dir` becomes relative
    /// to the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { location, message, .. } => {
                ConfigError::Parse { path: Some(path.into()), location, message }
            }
            other => other,
        })?;
        if cfg.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new(""));
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        Ok(cfg)
    }

    /// Parses and checks TOML text. A relative `data_dir` stays relative to
    /// the working directory.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the whole configuration, including that every secret's
    /// environment variable is set. [`crate::Idp::new`] calls it too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(drop)
    }

    /// The issuer in force for a server bound to `bound`.
    pub fn issuer_for(&self, bound: SocketAddr) -> String {
        match &self.issuer {
            Some(issuer) => issuer.clone(),
            None => {
                let ip = match bound.ip() {
                    IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                format!("http://{}", SocketAddr::new(ip, bound.port()))
            }
        }
    }

    /// Checks everything and reads the secrets.
    pub(crate) fn resolve(&self) -> Result<Resolved, ConfigError> {
        if let Some(issuer) = &self.issuer {
            check_issuer(issuer)?;
        }
        range("access_token_ttl_secs", self.access_token_ttl_secs, 1, 7 * 24 * 3600)?;
        range("refresh_token_ttl_secs", self.refresh_token_ttl_secs, 1, 365 * 24 * 3600)?;
        range("device_code_ttl_secs", self.device_code_ttl_secs, 1, 3600)?;
        range("device_poll_interval_secs", self.device_poll_interval_secs, 1, 60)?;

        if self.audiences.is_empty() {
            return Err(ConfigError::NoAudiences);
        }
        let mut seen = HashSet::new();
        for aud in &self.audiences {
            check_audience(aud)?;
            if self.issuer.as_deref() == Some(aud.as_str()) {
                // Refresh tokens are addressed to the issuer itself.
                return Err(ConfigError::BadAudience {
                    audience: aud.clone(),
                    reason: "must not be the issuer (refresh tokens are addressed to the issuer)",
                });
            }
            if !seen.insert(aud.as_str()) {
                return Err(ConfigError::BadAudience { audience: aud.clone(), reason: "is listed twice" });
            }
        }
        if let Some(default) = &self.default_audience {
            if !self.audiences.contains(default) {
                return Err(ConfigError::DefaultAudienceNotListed { audience: default.clone() });
            }
        }

        // One namespace for client ids, one for subjects (users and services).
        let mut client_ids = HashSet::new();
        for id in &self.public_clients {
            check_id("public client", id)?;
            if !client_ids.insert(id.to_lowercase()) {
                return Err(ConfigError::Duplicate { kind: "client", id: id.clone() });
            }
        }
        let mut subjects = HashSet::new();
        let mut users = Vec::with_capacity(self.users.len());
        for u in &self.users {
            check_id("user", &u.id)?;
            if !subjects.insert(u.id.to_lowercase()) {
                return Err(ConfigError::Duplicate { kind: "user", id: u.id.clone() });
            }
            let owner = format!("user {:?}", u.id);
            let password = secret(&owner, "password", u.password.as_ref(), u.password_env.as_deref())?;
            users.push(ResolvedUser { id: u.id.clone(), password, name: u.name.clone() });
        }
        let mut clients = Vec::with_capacity(self.clients.len());
        for c in &self.clients {
            check_id("service client", &c.client_id)?;
            check_id("service client subject", &c.subject)?;
            if !client_ids.insert(c.client_id.to_lowercase()) {
                return Err(ConfigError::Duplicate { kind: "client", id: c.client_id.clone() });
            }
            if self.users.iter().any(|u| u.id.eq_ignore_ascii_case(&c.subject)) {
                return Err(ConfigError::SubjectIsUser { client_id: c.client_id.clone(), subject: c.subject.clone() });
            }
            if !subjects.insert(c.subject.to_lowercase()) {
                return Err(ConfigError::Duplicate { kind: "subject", id: c.subject.clone() });
            }
            let owner = format!("client {:?}", c.client_id);
            let secret = secret(&owner, "client_secret", c.client_secret.as_ref(), c.client_secret_env.as_deref())?;
            clients.push(ResolvedClient { client_id: c.client_id.clone(), secret, subject: c.subject.clone() });
        }
        for w in &self.web_clients {
            check_id("web client", &w.client_id)?;
            if !client_ids.insert(w.client_id.to_lowercase()) {
                return Err(ConfigError::Duplicate { kind: "client", id: w.client_id.clone() });
            }
            if w.redirect_uris.is_empty() {
                return Err(ConfigError::BadRedirectUri {
                    client_id: w.client_id.clone(),
                    uri: String::new(),
                    reason: "is missing: list at least one",
                });
            }
            for uri in &w.redirect_uris {
                check_redirect_uri(uri).map_err(|reason| ConfigError::BadRedirectUri {
                    client_id: w.client_id.clone(),
                    uri: uri.clone(),
                    reason,
                })?;
            }
        }
        Ok(Resolved { users, clients })
    }
}

fn parse_message(path: Option<&Path>, location: &str, message: &str) -> String {
    let parts: Vec<String> = [
        path.map(|p| p.display().to_string()),
        Some(location.to_owned()).filter(|l| !l.is_empty()),
        Some(message.to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();
    parts.join(": ")
}

/// A TOML error as `line L, column C: message`, leaving out the source line
/// the parser would quote (it may hold a password).
fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let location = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}")
        }
        None => String::new(),
    };
    let mut message = e.message().trim_end().to_owned();
    // Name the key (a duplicate key's span is the key, never a value).
    if message == "duplicate key" {
        if let Some(key) = e.span().and_then(|s| text.get(s)) {
            message = format!("duplicate key `{}`", key.chars().take(64).collect::<String>());
        }
    }
    ConfigError::Parse { path: None, location, message }
}

fn range(setting: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { setting, value, min, max })
    }
}

fn check_id(kind: &'static str, id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.chars().count() > MAX_ID_LEN || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::BadId { kind, id: id.to_owned() });
    }
    Ok(())
}

/// An issuer is an `http(s)` URL with a host and nothing after the path
/// (OpenID Connect Discovery section 3); it is compared byte for byte, so a
/// trailing `/` is refused rather than silently removed.
fn check_issuer(issuer: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::BadIssuer { issuer: issuer.to_owned(), reason };
    let url = url::Url::parse(issuer).map_err(|_| bad("not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    if issuer.ends_with('/') {
        return Err(bad("must not end with '/' (tokens carry the issuer exactly as configured)"));
    }
    Ok(())
}

/// An absolute `https` URL (or `http` on a loopback host), without
/// credentials or fragment (RFC 6749 section 3.1.2).
pub(crate) fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(uri).map_err(|_| "is not a valid URL")?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "[::1]";
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("must be https unless its host is a loopback name"),
        _ => return Err("must be an http or https URL"),
    }
    if host.is_empty() {
        return Err("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials");
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment");
    }
    Ok(())
}

fn check_audience(aud: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::BadAudience { audience: aud.to_owned(), reason };
    if aud.is_empty() || aud.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must be non-empty, without spaces"));
    }
    url::Url::parse(aud)
        .map_err(|_| bad("must be an absolute URI such as https://core.acme.test or kms://acme.test"))?;
    Ok(())
}

fn secret(owner: &str, field: &'static str, inline: Option<&Secret>, env: Option<&str>) -> Result<Secret, ConfigError> {
    let value = match (inline, env) {
        (Some(s), None) => s.clone(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Secret::new(v),
            _ => return Err(ConfigError::MissingEnv { owner: owner.to_owned(), var: var.to_owned() }),
        },
        _ => return Err(ConfigError::SecretSource { owner: owner.to_owned(), field }),
    };
    if value.expose().is_empty() {
        return Err(ConfigError::EmptySecret { owner: owner.to_owned(), field });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_is_derived_from_the_bound_address() {
        let cfg = Config::default();
        assert_eq!(cfg.issuer_for("127.0.0.1:8400".parse().unwrap()), "http://127.0.0.1:8400");
        assert_eq!(cfg.issuer_for("0.0.0.0:9".parse().unwrap()), "http://127.0.0.1:9");
        assert_eq!(cfg.issuer_for("[::]:9".parse().unwrap()), "http://[::1]:9");
    }

    #[test]
    fn issuers() {
        for ok in ["http://127.0.0.1:8400", "https://login.acme.test", "https://acme.test/idp"] {
            check_issuer(ok).unwrap();
        }
        for bad in
            ["", "127.0.0.1:8400", "ftp://x", "https://acme.test/", "https://u:p@x", "https://x?a=b", "https://x#f"]
        {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_errors_do_not_quote_the_source_line() {
        let err = Config::from_toml("audiences = [\"kms://a\"]\n[[users]]\nid = \"a\"\npassword = \"s3cret\" junk\n")
            .unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("line 4"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
