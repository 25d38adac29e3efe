//! `custos kms serve --config FILE`: the KMS's TOML configuration.
//!
//! See `kms.example.toml` at the crate root for a commented example. Relative
//! paths are relative to the config file's directory. Secrets come from the
//! environment: the CMK passphrase (`cmk.passphrase_env`) or HSM PIN
//! (`cmk.pin_env`) and, optionally, the whole database URL
//! (`CUSTOS_KMS_DATABASE_URL`, which overrides the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kms_identity::IdentityConfig;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// This KMS's domain: URIs are `kms://<domain>/...`.
    pub domain: String,
    /// The org whose users this KMS serves (user ids without `@` get it).
    pub org_domain: String,
    /// `sqlite://PATH` (default `sqlite://<data_dir>/kms.db`) or `postgres://...`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Where generated files go (default `./data` beside the config file).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The static key.
    #[serde(default)]
    pub static_key: StaticKeyConfig,
    /// The customer master key.
    #[serde(default)]
    pub cmk: CmkConfig,
    /// Token validation: this KMS's audience and its trusted issuers.
    pub identity: IdentityConfig,
    /// Users (`name@org`) who may use the administrative API. Changes are audited in the log.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Lifetimes.
    #[serde(default)]
    pub lifetimes: Lifetimes,
    /// Anonymous authorizations.
    #[serde(default)]
    pub anonymous: AnonymousConfig,
    /// Per-source limits on unauthenticated RSA work.
    #[serde(default)]
    pub limits: Limits,
    /// PEM file of CA certificates that may vouch for service clients (bots,
    /// search, DLP) presenting a JWK with an x5c chain and a proof of possession.
    /// Absent: only bearer tokens are accepted.
    #[serde(default)]
    pub service_trust_roots: Option<PathBuf>,
    /// Where this KMS answers, as peers and clients should reach it
    /// (`https://…`), when that is not `https://<domain>`: published at
    /// `/.well-known/custos-kms` for federation discovery.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Cores to connect out to (`ws://core.example/kms/connect`), for a KMS
    /// that clients cannot reach directly. The link reconnects by itself.
    #[serde(default)]
    pub connect_to: Vec<String>,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Crypto-shredding by period (the retention days themselves are org policy).
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// How keys are grouped for crypto-shredding, and how often expired periods are destroyed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Each KEK wraps the keys created in one period of this many hours (the
    /// granularity of retention: a period is destroyed whole).
    #[serde(default = "d_kek_period_hours")]
    pub kek_period_hours: u64,
    /// How often to look for periods past the org's retention.
    #[serde(default = "d_sweep_secs")]
    pub sweep_every_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { kek_period_hours: d_kek_period_hours(), sweep_every_secs: d_sweep_secs() }
    }
}

fn d_kek_period_hours() -> u64 {
    24
}
fn d_sweep_secs() -> u64 {
    3600
}

/// The audit log: every key release, denial and change, hash-chained, with
/// checkpoints signed by the static key. Always on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where the log lives (default: the KMS's PostgreSQL database, or
    /// `<data_dir>/audit.db` beside a SQLite one). Several KMS nodes on one
    /// PostgreSQL database write one chain.
    #[serde(default)]
    pub database_url: Option<String>,
    /// This node's name in each entry (default: `<domain>@<listen>`).
    #[serde(default)]
    pub node: Option<String>,
    /// Sign a checkpoint once this many entries are not covered.
    #[serde(default = "d_checkpoint_entries")]
    pub checkpoint_every_entries: u64,
    /// … or this many seconds after the last one, if any entry is not covered.
    #[serde(default = "d_checkpoint_secs")]
    pub checkpoint_every_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            node: None,
            checkpoint_every_entries: d_checkpoint_entries(),
            checkpoint_every_secs: d_checkpoint_secs(),
        }
    }
}

fn d_checkpoint_entries() -> u64 {
    10_000
}
fn d_checkpoint_secs() -> u64 {
    60
}

/// The static RSA key and its certificate.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// The private key: generated (RSA-2048) on first start when absent and
    /// written sealed under the CMK; a PEM file (PKCS#8 or PKCS#1) the operator
    /// provides is used as it is.
    pub path: Option<PathBuf>,
    /// PEM certificate for the key (its `x5c`). Self-signed and generated when absent.
    pub cert_path: Option<PathBuf>,
}

/// Where the customer master keys (CMKs) live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmkBackendKind {
    /// Passphrase-sealed files in a directory (crate `cmk`'s `FileBackend`).
    #[default]
    File,
    /// A PKCS#11 token (an HSM; softhsm2 for development).
    Pkcs11,
}

/// The CMKs: passphrase-sealed files (default) or a PKCS#11 HSM. Which one is
/// active is recorded in the KMS's database; the admin API rotates it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmkConfig {
    /// `file` (default) or `pkcs11`.
    #[serde(default)]
    pub backend: CmkBackendKind,
    /// `file`: the directory of CMK files (default `<data_dir>/cmk`, the first
    /// CMK generated on first start), or a `cmk.json` of the original layout,
    /// adopted on start into a `cmk` directory beside it (kept until that CMK
    /// is deleted). When absent, `<data_dir>/cmk.json` if that file exists.
    pub path: Option<PathBuf>,
    /// `file`: environment variable holding the passphrase (at least 12 characters).
    #[serde(default = "default_passphrase_env")]
    pub passphrase_env: String,
    /// `pkcs11`: the module (`.so`); default softhsm2's `libsofthsm2.so`.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// `pkcs11`: the token's label (required).
    #[serde(default)]
    pub token_label: Option<String>,
    /// `pkcs11`: environment variable holding the user PIN (default `CUSTOS_KMS_HSM_PIN`).
    #[serde(default)]
    pub pin_env: Option<String>,
    /// `pkcs11`: prefix of the CMK objects' labels (default `custos-cmk-`), so
    /// that several KMSs can share a token.
    #[serde(default)]
    pub label_prefix: Option<String>,
}

impl Default for CmkConfig {
    fn default() -> Self {
        Self {
            backend: CmkBackendKind::File,
            path: None,
            passphrase_env: default_passphrase_env(),
            module: None,
            token_label: None,
            pin_env: None,
            label_prefix: None,
        }
    }
}

impl CmkConfig {
    /// The HSM PIN's environment variable.
    pub fn pin_env(&self) -> &str {
        self.pin_env.as_deref().unwrap_or(DEFAULT_PIN_ENV)
    }

    /// The CMK objects' label prefix.
    pub fn label_prefix(&self) -> &str {
        self.label_prefix.as_deref().unwrap_or(cmk::DEFAULT_LABEL_PREFIX)
    }

    /// Checks what belongs to which backend.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        match self.backend {
            CmkBackendKind::File => {
                if self.module.is_some()
                    || self.token_label.is_some()
                    || self.pin_env.is_some()
                    || self.label_prefix.is_some()
                {
                    return invalid(
                        "cmk.module, token_label, pin_env and label_prefix apply only to backend = \"pkcs11\"",
                    );
                }
            }
            CmkBackendKind::Pkcs11 => {
                if self.path.is_some() {
                    return invalid("cmk.path applies only to backend = \"file\"");
                }
                if self.token_label.as_deref().is_none_or(|l| l.is_empty() || l.len() > 32) {
                    return invalid("cmk.token_label (1 to 32 bytes) is required with backend = \"pkcs11\"");
                }
                let prefix = self.label_prefix();
                if prefix.len() > 64 || prefix.chars().any(|c| c.is_control()) {
                    return invalid("cmk.label_prefix must be at most 64 printable bytes");
                }
                if self.pin_env().is_empty() {
                    return invalid("cmk.pin_env must name an environment variable");
                }
            }
        }
        if self.passphrase_env.is_empty() {
            return invalid("cmk.passphrase_env must name an environment variable");
        }
        Ok(())
    }
}

/// Default environment variable of the HSM user PIN.
pub const DEFAULT_PIN_ENV: &str = "CUSTOS_KMS_HSM_PIN";

/// Lifetimes, in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetimes {
    /// Ephemeral key (session).
    #[serde(default = "d_session")]
    pub session_secs: u64,
    /// How long an unbound key may wait to be bound.
    #[serde(default = "d_unbound")]
    pub unbound_key_secs: u64,
    /// How long a bound key may be used to encrypt.
    #[serde(default = "d_bound")]
    pub bound_key_secs: u64,
    /// Longest resource ttl.
    #[serde(default = "d_ttl")]
    pub max_resource_ttl_secs: u64,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            session_secs: d_session(),
            unbound_key_secs: d_unbound(),
            bound_key_secs: d_bound(),
            max_resource_ttl_secs: d_ttl(),
        }
    }
}

/// Anonymous authorizations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// Whether they may be created at all.
    #[serde(default = "d_true")]
    pub allow: bool,
    /// Cap on their life.
    #[serde(default = "d_anon")]
    pub max_lifetime_secs: u64,
}

impl Default for AnonymousConfig {
    fn default() -> Self {
        Self { allow: true, max_lifetime_secs: d_anon() }
    }
}

/// Rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Handshakes and signed resets per second per source address.
    #[serde(default = "d_rate")]
    pub handshakes_per_second: f64,
    /// Burst.
    #[serde(default = "d_burst")]
    pub handshake_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { handshakes_per_second: d_rate(), handshake_burst: d_burst() }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7443".parse().expect("valid")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_passphrase_env() -> String {
    "CUSTOS_KMS_CMK_PASSPHRASE".into()
}
fn d_session() -> u64 {
    3600
}
fn d_unbound() -> u64 {
    3600
}
fn d_bound() -> u64 {
    365 * 24 * 3600
}
fn d_ttl() -> u64 {
    10 * 365 * 24 * 3600
}
fn d_true() -> bool {
    true
}
fn d_anon() -> u64 {
    24 * 3600
}
fn d_rate() -> f64 {
    50.0
}
fn d_burst() -> f64 {
    200.0
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value that is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
            other => other,
        })
    }

    /// Parses TOML text; `base` anchors relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut c: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        c.domain = kms_protocol::uri::canonical_domain(&c.domain)
            .map_err(|_| ConfigError::Invalid(format!("domain `{}` is not a valid host name", c.domain)))?;
        c.org_domain = kms_protocol::uri::canonical_domain(&c.org_domain)
            .map_err(|_| ConfigError::Invalid(format!("org_domain `{}` is not a valid host name", c.org_domain)))?;
        if let Some(u) = &c.public_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!("public_url `{u}` must be an http(s) URL")));
            }
            c.public_url = Some(u.trim_end_matches('/').to_string());
        }
        if c.lifetimes.session_secs == 0 || c.lifetimes.session_secs > 24 * 3600 {
            return Err(ConfigError::Invalid("lifetimes.session_secs must be 1 to 86400".into()));
        }
        if c.retention.kek_period_hours == 0 || c.retention.kek_period_hours > 24 * 366 {
            return Err(ConfigError::Invalid("retention.kek_period_hours must be 1 to 8784".into()));
        }
        if c.retention.sweep_every_secs < 10 {
            return Err(ConfigError::Invalid("retention.sweep_every_secs must be at least 10".into()));
        }
        if !(c.limits.handshakes_per_second > 0.0 && c.limits.handshake_burst >= 1.0) {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        for a in &c.admins {
            if !a.contains('@') {
                return Err(ConfigError::Invalid(format!("admin `{a}` must be a full user id (name@org)")));
            }
        }
        let abs = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        c.data_dir = abs(&c.data_dir);
        c.static_key.path = Some(abs(c.static_key.path.as_deref().unwrap_or(&c.data_dir.join("static-key.sealed"))));
        c.static_key.cert_path =
            Some(abs(c.static_key.cert_path.as_deref().unwrap_or(&c.data_dir.join("static-cert.pem"))));
        c.cmk.check()?;
        c.cmk.path = Some(match &c.cmk.path {
            Some(p) => abs(p),
            // A deployment made before CMK backends keeps its cmk.json (adopted on start).
            None if c.data_dir.join("cmk.json").is_file() => c.data_dir.join("cmk.json"),
            None => c.data_dir.join(crate::crypto::CMK_DIR),
        });
        c.cmk.module = c.cmk.module.as_deref().map(abs);
        c.service_trust_roots = c.service_trust_roots.as_deref().map(abs);
        if let Ok(url) = std::env::var("CUSTOS_KMS_DATABASE_URL") {
            c.database_url = Some(url);
        }
        let url = c.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", c.data_dir.join("kms.db").display()));
        c.database_url = Some(match url.strip_prefix("sqlite://") {
            Some(p) if !p.starts_with('/') && !p.starts_with(':') => format!("sqlite://{}", base.join(p).display()),
            _ => url,
        });
        Ok(c)
    }

    /// The database URL in force.
    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().expect("set by parse")
    }

    /// Where the audit log lives: `[audit] database_url`; else, on SQLite, a
    /// file of its own beside the KMS's (`audit.db`: two writers on one
    /// SQLite file would queue behind each other's locks); on PostgreSQL, the
    /// KMS's own database (several nodes then write one chain).
    pub fn audit_database_url(&self) -> String {
        if let Some(u) = &self.audit.database_url {
            return u.clone();
        }
        let main = self.database_url();
        if main.starts_with("sqlite:") && !main.contains(":memory:") && !main.contains("mode=memory") {
            format!("sqlite://{}", self.data_dir.join("audit.db").display())
        } else {
            main.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
domain = "KMS.Acme.Example"
org_domain = "acme.example"
[identity]
audience = "kms://kms.acme.example"
[[identity.issuers]]
issuer = "https://idp.acme.example"
org_domain = "acme.example"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(MIN, Path::new("/etc/custos")).unwrap();
        assert_eq!(c.domain, "kms.acme.example");
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.static_key.path.as_deref(), Some(Path::new("/etc/custos/data/static-key.sealed")));
        assert_eq!(c.cmk.passphrase_env, "CUSTOS_KMS_CMK_PASSPHRASE");
        assert!(
            c.database_url().starts_with("sqlite:///etc/custos/data/kms.db")
                || std::env::var("CUSTOS_KMS_DATABASE_URL").is_ok()
        );
        assert_eq!(c.lifetimes.session_secs, 3600);
    }

    #[test]
    fn refusals() {
        assert!(matches!(Config::parse("domain = 1", Path::new(".")), Err(ConfigError::Parse { .. })));
        let unknown = format!("{MIN}\nsurprise = true\n");
        assert!(matches!(Config::parse(&unknown, Path::new(".")), Err(ConfigError::Parse { .. })));
        let bad = MIN.replace("KMS.Acme.Example", "not a domain");
        assert!(matches!(Config::parse(&bad, Path::new(".")), Err(ConfigError::Invalid(_))));
        let admins = format!("admins = [\"bob\"]\n{MIN}");
        assert!(matches!(Config::parse(&admins, Path::new(".")), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn cmk_backends() {
        let dir = tempfile::tempdir().unwrap();
        // File backend by default: the cmk directory, or an existing cmk.json of the original layout.
        let c = Config::parse(MIN, dir.path()).unwrap();
        assert_eq!(c.cmk.backend, CmkBackendKind::File);
        assert_eq!(c.cmk.path.as_deref(), Some(dir.path().join("data/cmk").as_path()));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/cmk.json"), "{}").unwrap();
        let c = Config::parse(MIN, dir.path()).unwrap();
        assert_eq!(c.cmk.path.as_deref(), Some(dir.path().join("data/cmk.json").as_path()));
        let explicit = format!("{MIN}\n[cmk]\npath = \"keys\"\npassphrase_env = \"P\"\n");
        let c = Config::parse(&explicit, Path::new("/etc/custos")).unwrap();
        assert_eq!(c.cmk.path.as_deref(), Some(Path::new("/etc/custos/keys")));

        let hsm = format!("{MIN}\n[cmk]\nbackend = \"pkcs11\"\ntoken_label = \"kms\"\nmodule = \"lib/p11.so\"\n");
        let c = Config::parse(&hsm, Path::new("/etc/custos")).unwrap();
        assert_eq!(c.cmk.backend, CmkBackendKind::Pkcs11);
        assert_eq!(c.cmk.module.as_deref(), Some(Path::new("/etc/custos/lib/p11.so")));
        assert_eq!((c.cmk.pin_env(), c.cmk.label_prefix()), ("CUSTOS_KMS_HSM_PIN", "custos-cmk-"));

        for bad in [
            "backend = \"pkcs11\"",                                    // no token
            "backend = \"pkcs11\"\ntoken_label = \"\"",                // empty token
            "backend = \"pkcs11\"\ntoken_label = \"t\"\npath = \"x\"", // a file setting
            "token_label = \"t\"",                                     // an HSM setting on the file backend
            "pin_env = \"PIN\"",
        ] {
            let text = format!("{MIN}\n[cmk]\n{bad}\n");
            assert!(matches!(Config::parse(&text, Path::new(".")), Err(ConfigError::Invalid(_))), "{bad}");
        }
        let text = format!("{MIN}\n[cmk]\nbackend = \"tpm\"\n");
        assert!(matches!(Config::parse(&text, Path::new(".")), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../kms.example.toml");
        Config::parse(text, Path::new("/srv")).unwrap();
    }
}
