//! Putting a KMS together from its configuration, and serving it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use base64::Engine as _;
use jose::RsaPrivateKey;
use serde_json::json;

use crate::auth::{AuthError, AuthenticatedUser, Authenticator};
use crate::config::Config;
use crate::crypto::{write_private_file, Cmk};
use crate::engine::{Engine, EngineConfig};
use crate::http::{router, AppState};
use crate::limit::RateLimiter;

/// Bearer tokens validated by `kms-identity` against the trusted issuers.
pub struct IdentityAuth(pub kms_identity::Verifier);

#[async_trait]
impl Authenticator for IdentityAuth {
    async fn authenticate(&self, token: &str) -> Result<AuthenticatedUser, AuthError> {
        match self.0.verify(token).await {
            Ok(id) => Ok(AuthenticatedUser { user_id: id.user_id, expires_at: id.expires_at }),
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
pub fn load_or_create_static_key(cfg: &Config, cmk: &Cmk) -> anyhow::Result<StaticKey> {
    const AAD: &str = "static-key";
    let key_path = cfg.static_key.path.as_deref().expect("set by Config::parse");
    let cert_path = cfg.static_key.cert_path.as_deref().expect("set by Config::parse");
    let (key, created) = match std::fs::read(key_path) {
        Ok(bytes) if bytes.starts_with(b"-----BEGIN") => {
            let pem = String::from_utf8(bytes).context("the static key PEM is not UTF-8")?;
            (RsaPrivateKey::from_pem(&pem, None).with_context(|| format!("static key {}", key_path.display()))?, false)
        }
        Ok(bytes) => {
            let der = cmk
                .key
                .unwrap(AAD, &bytes)
                .with_context(|| format!("opening the sealed static key {} (wrong CMK?)", key_path.display()))?;
            (RsaPrivateKey::from_pkcs8_der(&der, None)?, false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = RsaPrivateKey::generate(2048, None)?;
            let sealed = cmk.key.wrap(AAD, &k.to_pkcs8_der())?;
            write_private_file(key_path, &sealed).with_context(|| format!("writing {}", key_path.display()))?;
            (k, true)
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
            write_private_file(cert_path, cert.pem().as_bytes())?;
            cert.der().to_vec()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", cert_path.display())),
    };
    Ok(StaticKey { key, cert_der, created })
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
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let passphrase = std::env::var(&cfg.cmk.passphrase_env).with_context(|| {
        format!("the CMK passphrase must be in the environment variable {}", cfg.cmk.passphrase_env)
    })?;
    let cmk_path = cfg.cmk.path.as_deref().expect("set by Config::parse");
    let (cmk, created) = Cmk::open_or_create(cmk_path, passphrase.as_bytes()).context("opening the CMK")?;
    if created {
        println!(
            "custos kms: created a new CMK at {} (back it up with its passphrase: losing either loses every key)",
            cmk_path.display()
        );
    }

    let static_key = load_or_create_static_key(cfg, &cmk)?;
    if static_key.created {
        println!("custos kms: generated a static key and self-signed certificate for {}", cfg.domain);
    }
    println!(
        "custos kms: static key kid {} certificate SHA-256 {}",
        static_key.key.kid().unwrap_or_default(),
        fingerprint(&static_key.cert_der)
    );

    let store = kms_store::open(cfg.database_url()).await.context("opening the database")?;
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
    // The audit log's checkpoints are signed with the static key (context kms-audit-checkpoint).
    let signer_key =
        jose::RsaPrivateKey::from_pkcs8_der(&static_key.key.to_pkcs8_der(), static_key.key.kid().map(str::to_string))?;
    let signer = Arc::new(crate::audit::StaticKeySigner(kms_protocol::ServerKey::new(signer_key, &cfg.domain)?));
    let node = cfg.audit.node.clone().unwrap_or_else(|| format!("{}@{}", cfg.domain, cfg.listen));
    let audit_url = cfg.audit_database_url();
    let audit_log = Arc::new(audit::AuditLog::open(&audit_url, &node, signer).await.context("opening the audit log")?);
    audit_log.spawn_checkpoints(audit::CheckpointPolicy {
        every_entries: cfg.audit.checkpoint_every_entries,
        every: (cfg.audit.checkpoint_every_secs > 0).then(|| Duration::from_secs(cfg.audit.checkpoint_every_secs)),
    });
    let mut engine = Engine::open(ec, store.clone(), static_key.key, cmk, Arc::new(IdentityAuth(verifier)), limiter)
        .await?
        .with_audit(audit_log);
    if let Some(path) = &cfg.service_trust_roots {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let roots = crate::service_auth::TrustRoots::from_pem(&pem)
            .with_context(|| format!("service trust roots {}", path.display()))?;
        println!("custos kms: accepting service credentials under {} trust root(s)", roots.len());
        engine = engine.with_service_roots(roots);
    }
    let engine = Arc::new(engine);

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
        info: Arc::new(json!({"uri": format!("kms://{}", cfg.domain), "key": jwk})),
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
