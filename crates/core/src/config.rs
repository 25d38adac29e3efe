//! `custos core serve --config FILE`: the core's TOML configuration.
//!
//! See `core.example.toml` at the crate root. Relative paths are relative to
//! the config file's directory; `CUSTOS_CORE_DATABASE_URL` overrides the
//! database URL (for passwords).

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
    /// `sqlite://PATH` (default `sqlite://<data_dir>/core.db`) or `postgres://...`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Where the SQLite database and the file blobs go (default `./data`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Token validation: the core's own audience (never a KMS's) and its trusted issuers.
    pub identity: IdentityConfig,
    /// The orgs this core serves.
    #[serde(default, rename = "orgs")]
    pub orgs: Vec<OrgConfig>,
    /// NATS URL for several core nodes (default: in-process events, one node).
    #[serde(default)]
    pub nats_url: Option<String>,
    /// Subject prefix on NATS (`<prefix>.space.<id>`), to keep deployments sharing a NATS apart.
    #[serde(default = "default_prefix")]
    pub nats_prefix: String,
    /// Where file chunks go: a local directory by default, or S3-compatible storage.
    #[serde(default)]
    pub blobs: BlobConfig,
    /// Sizes, page lengths and relay budgets (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// Webhooks (bots receiving their spaces' events by HTTP POST).
    #[serde(default)]
    pub webhooks: WebhookConfig,
}

/// Webhook delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Whether this node delivers (in a deployment of several nodes, enable
    /// it on one, or on several sharing `<data_dir>/webhook.key`: receivers
    /// dedupe by event id).
    #[serde(default = "yes")]
    pub deliver: bool,
    /// Accept `http://` endpoints (development only; `https://` otherwise).
    #[serde(default)]
    pub allow_http: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { deliver: true, allow_http: false }
    }
}

fn yes() -> bool {
    true
}

/// File chunk storage. Credentials for S3 come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …), never from this file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobConfig {
    /// S3-compatible storage; absent: `<data_dir>/blobs`.
    #[serde(default)]
    pub s3: Option<S3Config>,
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Holds the chunks, at `files/<file id>/<index>`.
    pub bucket: String,
    /// Defaults to `us-east-1`, which S3-compatible services mostly ignore.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint for S3-compatible services (MinIO, Ceph…); absent: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow plain HTTP to the endpoint (tests, a private network).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// One org: its domain, its KMS, and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// The org's domain (user ids `name@<domain>`).
    pub domain: String,
    /// Its KMS (`kms://<kms-domain>`).
    pub kms_uri: String,
    /// Where the core forwards relayed KMS messages (`http://host:port`), when
    /// the KMS is reachable directly (else the KMS connects out to the core).
    #[serde(default)]
    pub kms_url: Option<String>,
    /// The KMS's static public key (PEM file), which a KMS connecting out must
    /// prove it holds. Without it, this org's KMS cannot connect out.
    #[serde(default)]
    pub kms_key: Option<PathBuf>,
    /// Users of this org (`name@<domain>`) who may read, never write, every
    /// space that has or had a member of this org: its metadata, members,
    /// events and file chunks (all ciphertext), through `/v1/compliance/…`.
    /// Reading the content still takes keys that only the org's KMS hands out
    /// (to its compliance officers, under its own policy).
    #[serde(default)]
    pub compliance_readers: Vec<String>,
    /// Search indexing services of this org (`name@<domain>`): besides each
    /// message's sender, they may (re-)index the messages of spaces they are
    /// members of (blinded tokens only; reading takes the org's KMS).
    #[serde(default)]
    pub search_indexers: Vec<String>,
    /// Org-level moderators (e.g. the org's DLP service): besides a space's
    /// own moderators, they may hide (delete) any message in the spaces of
    /// this org they are members of.
    #[serde(default)]
    pub moderators: Vec<String>,
    /// Preview services of this org (`name@<domain>`): they may store a
    /// sealed preview (thumbnail, excerpt) of files in spaces they are members of.
    #[serde(default)]
    pub preview_services: Vec<String>,
    /// Where this org serves its web client (`https://chat.acme.example`;
    /// `http://` for loopback names only): the only origins whose pages may
    /// call this core from a browser (CORS, and the WebSocket's `Origin`).
    /// Empty: no browser app may.
    #[serde(default)]
    pub web_origins: Vec<String>,
}

impl OrgConfig {
    /// Whether `user_id` is one of this org's compliance readers.
    pub fn is_compliance_reader(&self, user_id: &str) -> bool {
        self.compliance_readers.iter().any(|r| r == user_id)
    }
}

/// A web origin as browsers send it (`scheme://host[:port]`), or why not.
pub fn web_origin(s: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(s).map_err(|_| "it is not a URL")?;
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "[::1]";
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("it must be https unless its host is a loopback name"),
        _ => return Err("it must be an http or https origin"),
    }
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err("it must name a host, without credentials");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("it must be an origin: no path, query or fragment");
    }
    Ok(url.origin().ascii_serialization())
}

/// `name@domain` → the canonical form if `domain` is `org`, else why not.
fn org_user(id: &str, org: &str) -> Result<String, &'static str> {
    let (name, domain) = id.rsplit_once('@').ok_or("it is not name@domain")?;
    if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '@') {
        return Err("it is not a user id");
    }
    let domain = kms_protocol::uri::canonical_domain(domain).map_err(|_| "its domain is not a host name")?;
    if domain != org {
        return Err("it is not a user of this org");
    }
    Ok(format!("{name}@{domain}"))
}

/// `[limits]`: what one request or one caller may ask of the core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest event ciphertext (compact JWE) in bytes.
    #[serde(default = "d_msg")]
    pub max_ciphertext_bytes: usize,
    /// Largest file in bytes.
    #[serde(default = "d_file")]
    pub max_file_bytes: i64,
    /// Largest chunk in bytes.
    #[serde(default = "d_chunk")]
    pub max_chunk_bytes: i64,
    /// Events per history or sync page, at most.
    #[serde(default = "d_page")]
    pub max_page: u32,
    /// KMS messages relayed per second per caller, sustained (see [`crate::limit`]).
    #[serde(default = "d_relay_rate")]
    pub relay_per_second: f64,
    /// KMS messages relayed per caller at once (a batch counts as its number of messages).
    #[serde(default = "d_relay_burst")]
    pub relay_burst: u32,
    /// Callers whose relay budget is tracked at a time (memory bound).
    #[serde(default = "d_relay_callers")]
    pub relay_max_callers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ciphertext_bytes: d_msg(),
            max_file_bytes: d_file(),
            max_chunk_bytes: d_chunk(),
            max_page: d_page(),
            relay_per_second: d_relay_rate(),
            relay_burst: d_relay_burst(),
            relay_max_callers: d_relay_callers(),
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7080".parse().expect("valid")
}
fn default_prefix() -> String {
    "custos".into()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn d_msg() -> usize {
    64 * 1024
}
fn d_file() -> i64 {
    4 * 1024 * 1024 * 1024
}
fn d_chunk() -> i64 {
    4 * 1024 * 1024
}
fn d_page() -> u32 {
    500
}

// The relay's per-caller defaults, against a KMS's defaults (crates/kms:
// `handshakes_per_second` 50 and `handshake_burst` 200 per source address, and
// every relayed message has the core's address). A KMS charges that budget
// for handshakes and for the signed 499 it answers to anything it cannot read;
// the core cannot tell those apart from cheap session requests, so it counts
// every message.
//
// - Burst 150: a client opening a session and syncing 50 spaces (one
//   handshake, then per space the metadata key and a couple of content keys:
//   100 to 150 messages) passes at once, and so does the largest batch a KMS
//   accepts (100). One caller's whole burst still leaves 50 of the KMS's 200.
// - 20 per second: two fifths of the KMS's refill. A caller flooding without
//   pause leaves the KMS's bucket refilling at 30 per second for everyone
//   else, so it never runs dry. Not less: the SDK asks for a space's newest
//   key again when the one it holds is a second old (so that rotations and
//   revocations apply within a second), so a sender active in 10 spaces makes
//   about 10 KMS calls a second with every key cached.
//
// Several callers of one org flooding at once add up: two bursts can empty
// the KMS's bucket for a moment, three sustained floods keep it empty. The
// per-caller limit bounds what each account can do; bounding what several
// accounts do together needs the KMS to know who each relayed message is for.
fn d_relay_rate() -> f64 {
    20.0
}
fn d_relay_burst() -> u32 {
    150
}
fn d_relay_callers() -> usize {
    100_000
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses TOML text; `base` anchors relative paths.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Self> {
        let mut c: Config = toml::from_str(text)?;
        for o in &mut c.orgs {
            o.domain = kms_protocol::uri::canonical_domain(&o.domain)
                .map_err(|_| anyhow::anyhow!("org domain `{}` is not a host name", o.domain))?;
            let d = o
                .kms_uri
                .strip_prefix("kms://")
                .ok_or_else(|| anyhow::anyhow!("kms_uri `{}` must be kms://<domain>", o.kms_uri))?;
            o.kms_uri = format!(
                "kms://{}",
                kms_protocol::uri::canonical_domain(d)
                    .map_err(|_| anyhow::anyhow!("kms_uri `{}` is not valid", o.kms_uri))?
            );
        }
        for o in &mut c.orgs {
            let mut readers = Vec::with_capacity(o.compliance_readers.len());
            for r in &o.compliance_readers {
                let id = org_user(r, &o.domain).map_err(|why| {
                    anyhow::anyhow!(
                        "orgs `{}`: compliance_readers entry {r:?} is refused: {why} (expected name@{})",
                        o.domain,
                        o.domain
                    )
                })?;
                if !readers.contains(&id) {
                    readers.push(id);
                }
            }
            o.compliance_readers = readers;
            let mut indexers = Vec::with_capacity(o.search_indexers.len());
            for r in &o.search_indexers {
                let id = org_user(r, &o.domain).map_err(|why| {
                    anyhow::anyhow!("orgs `{}`: search_indexers entry {r:?} is refused: {why}", o.domain)
                })?;
                if !indexers.contains(&id) {
                    indexers.push(id);
                }
            }
            o.search_indexers = indexers;
            let mut mods = Vec::with_capacity(o.moderators.len());
            for r in &o.moderators {
                let id = org_user(r, &o.domain)
                    .map_err(|why| anyhow::anyhow!("orgs `{}`: moderators entry {r:?} is refused: {why}", o.domain))?;
                if !mods.contains(&id) {
                    mods.push(id);
                }
            }
            o.moderators = mods;
            let mut previewers = Vec::with_capacity(o.preview_services.len());
            for r in &o.preview_services {
                let id = org_user(r, &o.domain).map_err(|why| {
                    anyhow::anyhow!("orgs `{}`: preview_services entry {r:?} is refused: {why}", o.domain)
                })?;
                if !previewers.contains(&id) {
                    previewers.push(id);
                }
            }
            o.preview_services = previewers;
            let mut origins = Vec::with_capacity(o.web_origins.len());
            for w in &o.web_origins {
                let origin = web_origin(w).map_err(|why| {
                    anyhow::anyhow!("orgs `{}`: web_origins entry {w:?} is refused: {why}", o.domain)
                })?;
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
            o.web_origins = origins;
        }
        for o in &mut c.orgs {
            if let Some(k) = &o.kms_key {
                if k.is_relative() {
                    o.kms_key = Some(base.join(k));
                }
            }
        }
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        if let Ok(url) = std::env::var("CUSTOS_CORE_DATABASE_URL") {
            c.database_url = Some(url);
        }
        let url =
            c.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", c.data_dir.join("core.db").display()));
        c.database_url = Some(match url.strip_prefix("sqlite://") {
            Some(p) if !p.starts_with('/') && !p.starts_with(':') => format!("sqlite://{}", base.join(p).display()),
            _ => url,
        });
        if c.limits.max_chunk_bytes < 1024 || c.limits.max_ciphertext_bytes < 1024 || c.limits.max_page < 1 {
            anyhow::bail!("limits are too small (chunks and ciphertext at least 1024 bytes, pages at least 1 event)");
        }
        let l = &c.limits;
        if !(l.relay_per_second.is_finite() && l.relay_per_second > 0.0) || l.relay_burst < 1 || l.relay_max_callers < 1
        {
            anyhow::bail!(
                "relay limits must be positive (relay_per_second a finite number above 0, relay_burst and relay_max_callers at least 1)"
            );
        }
        kms_protocol::uri::canonical_domain(&c.nats_prefix.replace('.', "-"))
            .map_err(|_| anyhow::anyhow!("nats_prefix must be letters, digits and dashes"))?;
        Ok(c)
    }

    /// The database URL in force.
    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().expect("set by parse")
    }

    /// The org of a user id (`name@domain`), if this core serves it.
    pub fn org_of(&self, user_id: &str) -> Option<&OrgConfig> {
        let (_, domain) = user_id.rsplit_once('@')?;
        self.orgs.iter().find(|o| o.domain == domain)
    }

    /// Every org's web origins: those that may call this core from a browser.
    pub fn web_origins(&self) -> Vec<String> {
        let mut all: Vec<String> = self.orgs.iter().flat_map(|o| o.web_origins.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Whether `origin` is one of the orgs' web origins.
    pub fn allows_web_origin(&self, origin: &str) -> bool {
        self.orgs.iter().any(|o| o.web_origins.iter().any(|w| w == origin))
    }

    /// The org of which `user_id` is a compliance reader, if any.
    pub fn compliance_org_of(&self, user_id: &str) -> Option<&OrgConfig> {
        self.org_of(user_id).filter(|o| o.is_compliance_reader(user_id))
    }

    /// The org whose KMS has this domain.
    pub fn org_by_kms(&self, kms_domain: &str) -> Option<&OrgConfig> {
        self.orgs.iter().find(|o| o.kms_uri.strip_prefix("kms://") == Some(kms_domain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[identity]\naudience = \"https://core.example\"\n[[identity.issuers]]\nissuer = \"https://login.acme.example\"\norg_domain = \"acme.example\"\n";

    #[test]
    fn the_example_config_parses_and_documents_the_defaults() {
        let c = Config::parse(include_str!("../core.example.toml"), Path::new("/srv/core")).unwrap();
        let (l, d) = (&c.limits, Limits::default());
        assert_eq!(
            (l.relay_per_second, l.relay_burst, l.relay_max_callers),
            (d.relay_per_second, d.relay_burst, d.relay_max_callers),
            "the example shows the defaults"
        );
    }

    #[test]
    fn relay_limits_must_be_positive() {
        for bad in [
            "relay_per_second = 0.0",
            "relay_per_second = -1.0",
            "relay_per_second = inf",
            "relay_per_second = nan",
            "relay_burst = 0",
            "relay_max_callers = 0",
        ] {
            let e = Config::parse(&format!("{BASE}[limits]\n{bad}\n"), Path::new("/")).unwrap_err();
            assert!(e.to_string().contains("relay limits must be positive"), "{bad}: {e}");
        }
        let c = Config::parse(&format!("{BASE}[limits]\nrelay_per_second = 0.5\nrelay_burst = 1\n"), Path::new("/"));
        assert_eq!(c.unwrap().limits.relay_burst, 1);
    }
}
