//! Putting a KMS together from its configuration, and serving it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use base64::Engine as _;
use cmk::{CmkBackend, FileBackend, MasterKey, Pkcs11Backend, Pkcs11Config};
use jose::RsaPrivateKey;
use serde_json::json;
use zeroize::Zeroizing;

use crate::auth::{AuthError, AuthenticatedUser, Authenticator};
use crate::config::{CmkBackendKind, Config};
use crate::crypto::{Cmk, CMK_DIR};
use crate::engine::{Engine, EngineConfig};
use crate::http::{router, AppState};
use crate::limit::RateLimiter;
use crate::masterkeys::{seal_static_key, sealed_static_key_cmk, STATIC_KEY_AAD};

/// Bearer tokens validated by `kms-identity` against the trusted issuers.
pub struct IdentityAuth(pub kms_identity::Verifier);

#[async_trait]
impl Authenticator for IdentityAuth {
    async fn authenticate(&self, token: &str) -> Result<AuthenticatedUser, AuthError> {
        match self.0.verify(token).await {
            Ok(id) => Ok(AuthenticatedUser {
                user_id: id.user_id,
                expires_at: id.expires_at,
                client_credentials: id.client_credentials,
            }),
            Err(e) => Err(AuthError(format!("the bearer token was refused: {e}"))),
        }
    }
}

/// The static key, its certificate (DER) and whether they were generated now.
pub struct StaticKey {
    /// The key (`kid` = its RFC 7638 thumbprint).
    pub key: RsaPrivateKey,
    /// Its certificate (DER), for `x5c`.
    pub cert_der: Vec<u8>,
    /// Generated on this start.
    pub created: bool,
    /// The CMK its file is sealed under; `None` for a PEM file the operator provides.
    pub sealed_under: Option<String>,
}

/// The CMK backend the configuration names, opened.
pub struct OpenedBackend {
    /// The backend.
    pub backend: Arc<dyn CmkBackend>,
    /// A `cmk.json` of the original layout adopted into the file backend: its path and CMK.
    pub adopted: Option<(PathBuf, Arc<dyn MasterKey>)>,
}

/// Where the file backend's directory is, for `cmk.path`, and the `cmk.json`
/// of the original layout to adopt, if there is one.
fn file_layout(path: &Path) -> (PathBuf, Option<PathBuf>) {
    let beside = || path.parent().unwrap_or_else(|| Path::new(".")).join(CMK_DIR);
    if path.is_file() {
        (beside(), Some(path.to_path_buf()))
    } else if path.is_dir() || path.extension().is_none_or(|e| e != "json") {
        (path.to_path_buf(), None)
    } else {
        // A cmk.json path whose file is gone (its CMK was deleted) or was never made.
        (beside(), None)
    }
}

/// Opens the configured CMK backend (blocking: PBKDF2, HSM login). A file
/// backend adopts an existing `cmk.json` of the original layout (copied into
/// the directory beside it, byte for byte; kept until its CMK is deleted).
pub fn open_cmk_backend(cfg: &Config) -> anyhow::Result<OpenedBackend> {
    match cfg.cmk.backend {
        CmkBackendKind::File => {
            let env = &cfg.cmk.passphrase_env;
            let passphrase = Zeroizing::new(
                std::env::var(env)
                    .with_context(|| format!("the CMK passphrase must be in the environment variable {env}"))?,
            );
            let path = cfg.cmk.path.as_deref().context("cmk.path is not set (Config::parse sets it)")?;
            let (dir, legacy) = file_layout(path);
            let backend = FileBackend::open(&dir, passphrase.as_bytes())
                .with_context(|| format!("opening the CMK directory {}", dir.display()))?;
            let adopted = match legacy {
                Some(file) => {
                    let key = backend
                        .adopt_legacy(&file)
                        .with_context(|| format!("adopting {} into {}", file.display(), dir.display()))?;
                    Some((file, key))
                }
                None => None,
            };
            Ok(OpenedBackend { backend: Arc::new(backend), adopted })
        }
        CmkBackendKind::Pkcs11 => {
            let env = cfg.cmk.pin_env();
            let pin = Zeroizing::new(
                std::env::var(env)
                    .with_context(|| format!("the HSM user PIN must be in the environment variable {env}"))?,
            );
            let token = cfg.cmk.token_label.clone().context("cmk.token_label is required with backend = \"pkcs11\"")?;
            let mut p11 = Pkcs11Config::new(token.clone(), pin.as_str()).with_label_prefix(cfg.cmk.label_prefix());
            if let Some(m) = &cfg.cmk.module {
                p11 = p11.with_module(m);
            }
            let backend = Pkcs11Backend::open(p11).with_context(|| format!("opening the PKCS#11 token `{token}`"))?;
            Ok(OpenedBackend { backend: Arc::new(backend), adopted: None })
        }
    }
}

/// The CMK a node starts with: the active one the store's registry names;
/// else (a store from before CMK backends, or a fresh one) the adopted
/// `cmk.json`, the CMK of the org's existing KEKs, the backend's newest, or a
/// new one. Returns it and whether it was generated now.
pub async fn starting_cmk(
    store: &dyn kms_store::Store,
    opened: &OpenedBackend,
    org: &str,
) -> anyhow::Result<(Cmk, bool)> {
    let backend = opened.backend.clone();
    let open = |id: String| {
        let b = backend.clone();
        async move {
            let shown = id.clone();
            tokio::task::spawn_blocking(move || b.open(&id))
                .await
                .context("a CMK backend task failed")?
                .with_context(|| format!("the CMK {shown} does not open in the {} backend", backend.kind()))
        }
    };
    if let Some(id) = crate::masterkeys::stored_active(store).await? {
        return Ok((Cmk::with_backend(opened.backend.clone(), open(id).await?), false));
    }
    if let Some((_, key)) = &opened.adopted {
        return Ok((Cmk::with_backend(opened.backend.clone(), key.clone()), false));
    }
    let b = opened.backend.clone();
    let list = tokio::task::spawn_blocking(move || b.list()).await.context("a CMK backend task failed")??;
    if let Some(kek) = store.active_kek(org).await? {
        if !list.iter().any(|i| i.id == kek.cmk_id) {
            bail!(
                "the org's KEKs are wrapped under CMK {}, which the {} backend does not hold: wrong backend or passphrase?",
                kek.cmk_id,
                opened.backend.kind()
            );
        }
        return Ok((Cmk::with_backend(opened.backend.clone(), open(kek.cmk_id).await?), false));
    }
    match list.last() {
        Some(newest) => Ok((Cmk::with_backend(opened.backend.clone(), open(newest.id.clone()).await?), false)),
        None => {
            let b = opened.backend.clone();
            let key =
                tokio::task::spawn_blocking(move || b.generate()).await.context("a CMK backend task failed")??;
            Ok((Cmk::with_backend(opened.backend.clone(), key), true))
        }
    }
}

/// The active CMK, opened as the KMS opens it, for tools run beside a KMS
/// (`custos kms audit-export`, `custos kms static-key`): never creates one.
pub async fn open_cmk_for_tool(cfg: &Config) -> anyhow::Result<Cmk> {
    let key_path = cfg.static_key.path.as_deref().context("static_key.path is not set")?;
    anyhow::ensure!(
        key_path.exists(),
        "no static key at {}: is this the KMS's configuration, on the KMS's machine?",
        key_path.display()
    );
    let backend_cfg = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || open_cmk_backend(&backend_cfg))
        .await
        .context("opening the CMK backend")??;
    let store = kms_store::open(cfg.database_url()).await.context("opening the KMS database")?;
    let b = opened.backend.clone();
    let none_yet =
        tokio::task::spawn_blocking(move || b.list()).await.context("a CMK backend task failed")??.is_empty();
    anyhow::ensure!(
        !none_yet || opened.adopted.is_some(),
        "the CMK backend holds no CMK: is this the KMS's configuration?"
    );
    Ok(starting_cmk(&*store, &opened, &cfg.org_domain).await?.0)
}

/// Opens a sealed static key file: under the CMK its header names (opened
/// from `cmk`'s backend if it is another one), or, for a file of the original
/// layout, under `cmk` or any CMK of its backend. Returns the PKCS#8 DER and the CMK.
fn open_sealed_static_key(bytes: &[u8], cmk: &Cmk) -> anyhow::Result<(Zeroizing<Vec<u8>>, String)> {
    if let Some((id, blob)) = sealed_static_key_cmk(bytes) {
        let key = if id == cmk.id() {
            cmk.key().clone()
        } else {
            let backend =
                cmk.backend().with_context(|| format!("the static key is sealed under another CMK ({id})"))?;
            backend.open(id).with_context(|| format!("the static key is sealed under CMK {id}, which does not open"))?
        };
        return Ok((key.unwrap(STATIC_KEY_AAD, blob)?, id.to_string()));
    }
    // The original layout: a bare blob under the CMK of the original cmk.json.
    if let Ok(der) = cmk.key().unwrap(STATIC_KEY_AAD, bytes) {
        return Ok((der, cmk.id().to_string()));
    }
    if let Some(backend) = cmk.backend() {
        for info in backend.list()? {
            if let Ok(der) = backend.open(&info.id).and_then(|k| k.unwrap(STATIC_KEY_AAD, bytes)) {
                return Ok((der, info.id));
            }
        }
    }
    bail!("no CMK opens it")
}

fn pem_body(pem: &str, label: &str) -> anyhow::Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).with_context(|| format!("no {label} in PEM"))? + begin.len();
    let stop = pem[start..].find(&end).with_context(|| format!("unterminated {label} in PEM"))? + start;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// Loads the static key and certificate, generating either when absent.
///
/// A generated key is written sealed under the CMK (AES-256-GCM), never in
/// clear: with it and recorded traffic, anyone could open every handshake. A
/// key file the operator provides as PEM is used as it is (protect it yourself).
///
/// Neither file is ever replaced: nodes sharing a data directory may start at
/// once (and [`start`] serializes them only where file locks work), so a
/// generated file is published only if the name is free, and a node that
/// finds another's file there first uses that one instead of its own.
pub fn load_or_create_static_key(cfg: &Config, cmk: &Cmk) -> anyhow::Result<StaticKey> {
    let key_path = cfg.static_key.path.as_deref().context("static_key.path is not set (Config::parse sets it)")?;
    let cert_path =
        cfg.static_key.cert_path.as_deref().context("static_key.cert_path is not set (Config::parse sets it)")?;
    let (key, created, sealed_under) = match std::fs::read(key_path) {
        Ok(bytes) => {
            let (key, under) = open_static_key_file(key_path, &bytes, cmk)?;
            (key, false, under)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = RsaPrivateKey::generate(2048, None)?;
            let sealed = seal_static_key(cmk.key().as_ref(), &k.to_pkcs8_der())?;
            let written = create_dir_of(key_path).and_then(|()| secretfile::create_or_read(key_path, &sealed));
            match written.with_context(|| format!("writing {}", key_path.display()))? {
                secretfile::Outcome::Created => (k, true, Some(cmk.id().to_string())),
                // Another node's first start got there first: its key is this node's too.
                secretfile::Outcome::Existing(bytes) => {
                    let (key, under) = open_static_key_file(key_path, &bytes, cmk)?;
                    (key, false, under)
                }
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
    };
    let kid = key.public_key().thumbprint();
    let key = RsaPrivateKey::from_pkcs8_der(&key.to_pkcs8_der(), Some(kid))?;
    let cert_der = match std::fs::read_to_string(cert_path) {
        Ok(pem) => pem_body(&pem, "CERTIFICATE")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let der = key.to_pkcs8_der();
            let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &rcgen::PKCS_RSA_SHA256)?;
            let mut params = rcgen::CertificateParams::new(vec![cfg.domain.clone()])?;
            params.distinguished_name.push(rcgen::DnType::CommonName, cfg.domain.clone());
            params.not_after = rcgen::date_time_ymd(2099, 12, 31);
            let cert = params.self_signed(&kp)?;
            let written =
                create_dir_of(cert_path).and_then(|()| secretfile::create_or_read(cert_path, cert.pem().as_bytes()));
            match written.with_context(|| format!("writing {}", cert_path.display()))? {
                secretfile::Outcome::Created => cert.der().to_vec(),
                // Another node's, for the same key (it read or wrote the same key file first).
                secretfile::Outcome::Existing(pem) => {
                    pem_body(std::str::from_utf8(&pem).context("the certificate PEM is not UTF-8")?, "CERTIFICATE")?
                }
            }
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", cert_path.display())),
    };
    Ok(StaticKey { key, cert_der, created, sealed_under })
}

/// The key in a static key file: a PEM the operator provides, or a key sealed
/// under a CMK. Returns it and the CMK it is sealed under (`None` for PEM).
fn open_static_key_file(path: &Path, bytes: &[u8], cmk: &Cmk) -> anyhow::Result<(RsaPrivateKey, Option<String>)> {
    if bytes.starts_with(b"-----BEGIN") {
        let pem = std::str::from_utf8(bytes).context("the static key PEM is not UTF-8")?;
        let key = RsaPrivateKey::from_pem(pem, None).with_context(|| format!("static key {}", path.display()))?;
        return Ok((key, None));
    }
    let (der, under) = open_sealed_static_key(bytes, cmk)
        .with_context(|| format!("opening the sealed static key {} (wrong CMK?)", path.display()))?;
    Ok((RsaPrivateKey::from_pkcs8_der(&der, None)?, Some(under)))
}

/// Creates the directory a file goes in, if missing (mode 0700).
fn create_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => secretfile::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// The lock file in a data directory that nodes starting on it take in turn.
const START_LOCK: &str = ".kms-start.lock";

/// Takes the start lock of `data_dir` (an exclusive `flock` on
/// [`START_LOCK`], released when the file returned is dropped), waiting for
/// another node's start if need be.
///
/// Nodes sharing a data directory make their first-start decisions in turn
/// under it, so that they end with one CMK and one static key: the second
/// finds the first's CMK in the backend and its key on disk. Where the file
/// system has no locks, the start goes on without it (and says so): the files
/// are still never replaced, but two nodes starting at that very moment may
/// each generate a CMK, of which the database's registry keeps one.
async fn lock_data_dir(data_dir: &Path) -> anyhow::Result<Option<std::fs::File>> {
    let path = data_dir.join(START_LOCK);
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => return Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            println!("custos kms: another node is starting on {}: waiting for it", data_dir.display());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "no file lock on the data directory: starting without one");
            return Ok(None);
        }
    }
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .context("waiting for the data directory's start lock")?
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Some(locked))
}

/// SHA-256 of DER, as colon-separated hex (how certificate fingerprints are shown).
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// A started KMS.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine (for in-process use).
    pub engine: Arc<Engine>,
    /// The server task; abort it to stop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Opens everything the config names and starts serving. `metrics` installs the
/// Prometheus recorder (once per process).
pub async fn start(cfg: &Config, metrics: bool) -> anyhow::Result<Running> {
    secretfile::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    // Held until this node has its CMK and static keys (see `lock_data_dir`).
    let start_lock = lock_data_dir(&cfg.data_dir).await?;
    let backend_cfg = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || open_cmk_backend(&backend_cfg))
        .await
        .context("opening the CMK backend")??;
    if let Some((file, key)) = &opened.adopted {
        println!(
            "custos kms: CMK {} of {} is in the CMK directory beside it (that file is deleted with its CMK)",
            key.id(),
            file.display()
        );
    }
    let store = kms_store::open(cfg.database_url()).await.context("opening the database")?;
    let (cmk, created) = starting_cmk(&*store, &opened, &cfg.org_domain).await?;
    if created {
        println!(
            "custos kms: created a new CMK {} in the {} backend (back it up: losing it loses every key)",
            cmk.id(),
            opened.backend.kind()
        );
    }
    println!("custos kms: CMK backend {}, active CMK {}", opened.backend.kind(), cmk.id());

    let static_key = load_or_create_static_key(cfg, &cmk)?;
    if static_key.created {
        println!("custos kms: generated a static key and self-signed certificate for {}", cfg.domain);
    }
    println!(
        "custos kms: static key kid {} certificate SHA-256 {}",
        static_key.key.kid().unwrap_or_default(),
        fingerprint(&static_key.cert_der)
    );

    // A static key rotation's overlap: the staged next key, or the previous one, served too.
    let mut others = Vec::new();
    for slot in [crate::static_keys::Slot::Next, crate::static_keys::Slot::Previous] {
        if let Some(k) = crate::static_keys::load_slot(cfg, &cmk, slot)? {
            println!(
                "custos kms: also serving the {slot:?} static key, kid {} certificate SHA-256 {}",
                k.key.kid().unwrap_or_default(),
                fingerprint(&k.cert_der)
            );
            others.push((slot, k));
        }
    }
    // The CMK is in the backend, the static key and certificate on disk: a node
    // starting next on this data directory finds and uses them.
    drop(start_lock);

    let verifier = kms_identity::Verifier::new(cfg.identity.clone()).context("identity configuration")?;
    let mut ec = EngineConfig::new(&cfg.domain, &cfg.org_domain);
    ec.session_lifetime = Duration::from_secs(cfg.lifetimes.session_secs);
    ec.unbound_key_lifetime = Duration::from_secs(cfg.lifetimes.unbound_key_secs);
    ec.bound_key_lifetime = Duration::from_secs(cfg.lifetimes.bound_key_secs);
    ec.max_resource_ttl = Duration::from_secs(cfg.lifetimes.max_resource_ttl_secs);
    ec.anonymous_lifetime = Duration::from_secs(cfg.anonymous.max_lifetime_secs);
    ec.allow_anonymous = cfg.anonymous.allow;
    ec.admins = cfg.admins.clone();
    ec.kek_period = Duration::from_secs(cfg.retention.kek_period_hours * 3600);
    let limiter = RateLimiter::new(cfg.limits.handshakes_per_second, cfg.limits.handshake_burst);
    let mut jwk = static_key.key.public_key().to_jwk();
    jwk.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(&static_key.cert_der)]);
    // `key` is the current key; `keys` lists every key served, current first, with its role.
    let mut keys = vec![json!({"status": "current", "key": jwk.clone()})];
    for (slot, k) in &others {
        let mut j = k.key.public_key().to_jwk();
        j.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(&k.cert_der)]);
        let status = match slot {
            crate::static_keys::Slot::Next => "next",
            crate::static_keys::Slot::Previous => "previous",
        };
        keys.push(json!({"status": status, "key": j}));
    }
    // The audit log's checkpoints are signed with the static key (context kms-audit-checkpoint).
    let signer_key =
        jose::RsaPrivateKey::from_pkcs8_der(&static_key.key.to_pkcs8_der(), static_key.key.kid().map(str::to_string))?;
    let signer = Arc::new(crate::audit::StaticKeySigner(kms_protocol::ServerKey::new(signer_key, &cfg.domain)?));
    // Re-sealed under the active CMK whenever it rotates (a PEM file is the operator's to protect).
    let sealed_static_key = match (&static_key.sealed_under, &cfg.static_key.path) {
        (Some(_), Some(path)) => Some((path.clone(), static_key.key.to_pkcs8_der())),
        _ => None,
    };
    let node = cfg.audit.node.clone().unwrap_or_else(|| format!("{}@{}", cfg.domain, cfg.listen));
    let audit_url = cfg.audit_database_url();
    let audit_log = Arc::new(audit::AuditLog::open(&audit_url, &node, signer).await.context("opening the audit log")?);
    audit_log.spawn_checkpoints(audit::CheckpointPolicy {
        every_entries: cfg.audit.checkpoint_every_entries,
        every: (cfg.audit.checkpoint_every_secs > 0).then(|| Duration::from_secs(cfg.audit.checkpoint_every_secs)),
    });
    let cert_der = static_key.cert_der.clone();
    let mut engine = Engine::open(ec, store.clone(), static_key.key, cmk, Arc::new(IdentityAuth(verifier)), limiter)
        .await?
        .with_audit(audit_log)
        // Peers (listed in the org policy) know this KMS by its static key's certificate.
        .with_federation(&cert_der);
    let mut other_files = Vec::new();
    let mut other_keys = Vec::new();
    for (slot, k) in others {
        if k.sealed_under.is_some() {
            other_files.push((crate::static_keys::slot_paths(cfg, slot)?.0, k.key.to_pkcs8_der()));
        }
        other_keys.push(k.key);
    }
    engine = engine.with_other_static_keys(other_keys)?;
    if let Some(path) = &cfg.service_trust_roots {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let roots = crate::service_auth::TrustRoots::from_pem(&pem)
            .with_context(|| format!("service trust roots {}", path.display()))?;
        println!("custos kms: accepting service credentials under {} trust root(s)", roots.len());
        engine = engine.with_service_roots(roots);
    }
    let engine = Arc::new(engine);
    if let Some((file, key)) = &opened.adopted {
        engine.master_keys().set_legacy_file(file.clone(), key.id().to_string());
    }
    if let Some((path, pkcs8)) = sealed_static_key {
        engine.master_keys().set_static_key_file(path, pkcs8).await.context("re-sealing the static key")?;
    }
    for (path, pkcs8) in other_files {
        engine.master_keys().set_static_key_file(path, pkcs8).await.context("re-sealing a static key")?;
    }
    // A rotation a crash interrupted (on any node) is finished now.
    match engine.finish_cmk_rotation().await {
        Ok(r) if r.keks + r.ticket_keys > 0 => {
            println!("custos kms: re-wrapped {} KEK(s), {} ticket key(s) under the active CMK", r.keks, r.ticket_keys)
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "finishing a CMK rotation failed"),
    }

    tokio::spawn(engine.tickets().clone().poll());
    // Policy changes made on any node: announce cut-off principals so sockets get their resets.
    tokio::spawn(engine.policies().clone().poll());
    // Crypto-shredding of periods past the org's retention (a no-op without a retention policy).
    tokio::spawn(engine.clone().retention_loop(Duration::from_secs(cfg.retention.sweep_every_secs)));
    for url in &cfg.connect_to {
        tokio::spawn(crate::connector::run(engine.clone(), url.clone()));
    }
    let hk_engine = engine.clone();
    let hk_store = store.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let now = crate::now_ms();
            if let Err(e) = hk_store.purge_expired(now).await {
                tracing::warn!(error = %e, "purging expired rows failed");
            }
            if let Err(e) = hk_engine.tickets().housekeeping(now).await {
                tracing::warn!(error = %e, "ticket key housekeeping failed");
            }
            // Whatever some node wrapped under a previous CMK (an interrupted rotation).
            if let Err(e) = hk_engine.finish_cmk_rotation().await {
                tracing::warn!(error = %e, "re-wrapping under the active CMK failed");
            }
        }
    });

    let handle = if metrics {
        Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("installing the metrics recorder")?,
        )
    } else {
        None
    };
    let state = AppState {
        engine: engine.clone(),
        info: Arc::new(json!({"uri": format!("kms://{}", cfg.domain), "key": jwk, "keys": keys})),
        discovery: Arc::new(json!({"uri": format!("kms://{}", cfg.domain), "url": cfg.public_url})),
        metrics: handle,
    };
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "server failed");
        }
    });
    Ok(Running { addr, engine, task })
}

/// `custos kms serve`: start, print where, run until SIGINT/SIGTERM.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = start(&cfg, true).await?;
    println!("custos kms: serving kms://{} on http://{}", cfg.domain, running.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = running.task => { if let Err(e) = r { bail!("server task failed: {e}") } }
    }
    println!("custos kms: stopping");
    Ok(())
}
