//! The client's configuration and credentials, under the user's config
//! directory (`$XDG_CONFIG_HOME/custos`, or `--config-dir`/`CUSTOS_CONFIG_DIR`).
//!
//! - `config.toml`: the org profile (identity provider, core, the pinned KMS
//!   key). Written by `custos login --org FILE` from the file the org hands
//!   out (`custos up` writes one per org).
//! - `credentials.json`: the refresh token and this device's client id,
//!   mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// An org's client profile: where to log in and which KMS key to trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgProfile {
    /// The org's domain (`acme.test`).
    pub org: String,
    /// The OpenID issuer (its discovery document names the endpoints).
    pub issuer: String,
    /// The OAuth client id of the CLI at that issuer.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The core's base URL.
    pub core_url: String,
    /// The core's token audience.
    pub core_audience: String,
    /// The org's KMS domain.
    pub kms_domain: String,
    /// The KMS's token audience.
    pub kms_audience: String,
    /// The KMS static public key as a JWK (JSON text): the pin. It comes
    /// from the org, never from the core.
    pub kms_key: String,
    /// Talk to the KMS directly at this URL instead of through the core's relay.
    #[serde(default)]
    pub kms_url: Option<String>,
}

fn default_client_id() -> String {
    "custos-cli".into()
}

/// What `login` stores.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    /// Who logged in (as the identity provider said).
    pub user: String,
    /// The refresh token (secret).
    pub refresh_token: String,
    /// This device's client id at the KMS.
    pub device_id: String,
    /// The issuer the refresh token belongs to (it is never sent elsewhere).
    #[serde(default)]
    pub issuer: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

/// The config directory in use.
pub fn config_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("CUSTOS_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    Ok(dirs::config_dir().context("no config directory on this system: pass --config-dir")?.join("custos"))
}

impl OrgProfile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let p: OrgProfile =
            toml::from_str(&text).with_context(|| format!("{} is not a Custos org profile", path.display()))?;
        client::KmsPin::from_jwk_json(&p.kms_domain, &p.kms_key)
            .with_context(|| format!("{}: kms_key", path.display()))?;
        Ok(p)
    }

    /// The profile of the logged-in configuration.
    pub fn current(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.toml");
        if !path.exists() {
            bail!("not logged in (no {}): run `custos login --org <org profile>`", path.display());
        }
        Self::load(&path)
    }

    /// Writes it as `dir/config.toml`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        // The directory credentials.json goes in too: private when made here.
        secretfile::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text =
            format!("# Custos client profile for {} (written by `custos login`)\n{}", self.org, toml::to_string(self)?);
        std::fs::write(dir.join("config.toml"), text)
            .with_context(|| format!("writing {}", dir.join("config.toml").display()))
    }

    /// The SDK session configuration.
    pub fn session_config(&self, device_id: &str) -> anyhow::Result<client::SessionConfig> {
        let pin = client::KmsPin::from_jwk_json(&self.kms_domain, &self.kms_key)?;
        let mut cfg = client::SessionConfig::new(&self.core_url, &self.core_audience, pin, &self.kms_audience);
        cfg.client_id = device_id.to_string();
        if let Some(url) = &self.kms_url {
            cfg.kms_route = client::Route::Direct { url: url.clone() };
        }
        Ok(cfg)
    }
}

impl Credentials {
    /// Reads `dir/credentials.json`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("credentials.json");
        let text = std::fs::read(&path)
            .with_context(|| format!("not logged in (no {}): run `custos login`", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is damaged: run `custos login` again", path.display()))
    }

    /// Writes `dir/credentials.json` with mode 0600 (created that way, so it
    /// is never readable by others, even for an instant).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        save_credentials(dir, self)
    }
}

/// Replaces `dir/credentials.json` atomically (see [`secretfile::replace`]).
/// Replacing is meant: a login, and every refresh token rotation, supersedes
/// the credentials before it.
fn save_credentials(dir: &Path, c: &Credentials) -> anyhow::Result<()> {
    secretfile::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("credentials.json");
    let text = zeroize::Zeroizing::new(serde_json::to_vec_pretty(c)?);
    secretfile::replace(&path, &text).with_context(|| format!("writing {}", path.display()))
}

/// A hook that stores a rotated refresh token.
pub fn rotate_hook(dir: &Path, user: &str, device_id: &str, issuer: &str) -> client::tokens::RefreshHook {
    let dir = dir.to_path_buf();
    let user = user.to_string();
    let device_id = device_id.to_string();
    let issuer = issuer.to_string();
    Arc::new(move |new: &str| {
        let c = Credentials {
            user: user.clone(),
            refresh_token: new.to_string(),
            device_id: device_id.clone(),
            issuer: issuer.clone(),
        };
        if let Err(e) = save_credentials(&dir, &c) {
            eprintln!("custos: could not store the renewed login: {e:#}");
        }
    })
}
