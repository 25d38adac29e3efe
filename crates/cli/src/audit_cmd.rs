//! `custos kms audit-export` (where the KMS key is: the export ends with a
//! seal signed by it) and `custos audit verify` (anywhere, with the KMS's
//! public key only).

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

/// Reads a KMS public key: PEM (SPKI), a JWK, or `GET /kms/info`'s JSON.
fn read_public_key(path: &Path) -> anyhow::Result<jose::RsaPublicKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.contains("-----BEGIN") {
        return jose::RsaPublicKey::from_pem(&text, None)
            .with_context(|| format!("{} is not an RSA public key", path.display()));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is neither PEM nor JSON", path.display()))?;
    let jwk = if v.get("key").is_some() { v["key"].clone() } else { v };
    let jwk: jose::Jwk = serde_json::from_value(jwk).with_context(|| format!("{} holds no JWK", path.display()))?;
    jwk.to_rsa_public().with_context(|| format!("{} is not an RSA key", path.display()))
}

/// `custos audit verify`: exit status 0 only when the log verifies completely.
pub fn verify(log: &Path, keys: &[std::path::PathBuf], allow_partial: bool, json_out: bool) -> anyhow::Result<bool> {
    anyhow::ensure!(!keys.is_empty(), "give the KMS public key with --key (PEM, JWK, or the JSON of GET /kms/info)");
    let keys: Vec<jose::RsaPublicKey> = keys.iter().map(|k| read_public_key(k)).collect::<anyhow::Result<_>>()?;
    let f = std::fs::File::open(log).with_context(|| format!("reading {}", log.display()))?;
    let report = audit::verify_jsonl_keys(BufReader::new(f), &keys);
    if json_out {
        println!(
            "{}",
            json!({
                "ok": report.is_ok(), "entries": report.entries, "checkpoints": report.checkpoints,
                "first_seq": report.first_seq, "last_seq": report.last_seq, "sealed": report.sealed,
                "anchored": report.anchored, "last_checkpoint_time": report.last_checkpoint_time,
                "problem": report.problem.as_ref().map(|p| json!({"line": p.line, "seq": p.seq, "kind": p.kind.as_str(), "detail": p.detail})),
            })
        );
    } else if let Some(p) = &report.problem {
        println!("TAMPERED or damaged: {p}");
        println!("(verified {} entries and {} checkpoints before it)", report.entries, report.checkpoints);
    } else if !report.sealed {
        println!(
            "INCOMPLETE: {} entries verified, but the export does not end with a valid seal (cut short?)",
            report.entries
        );
    } else {
        println!(
            "OK: {} entries (seq {}..={}), {} checkpoints, sealed{}",
            report.entries,
            report.first_seq.unwrap_or(0),
            report.last_seq.unwrap_or(0),
            report.checkpoints,
            if report.anchored {
                ""
            } else {
                "; NOT ANCHORED: the first entry's predecessor is not covered by this export (--allow-partial accepts that)"
            }
        );
    }
    // An export that does not start at the first entry (or at a checkpoint
    // covering what came before) cannot show that nothing was cut at its start.
    Ok(report.is_ok() && (report.anchored || allow_partial))
}

/// `custos kms audit-export`: writes the log (from `from_seq`) as JSON lines,
/// ending with a seal signed by the KMS static key.
pub fn export(config: &Path, from_seq: u64, out: Option<&Path>) -> anyhow::Result<()> {
    let cfg = kms::config::Config::load(config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        // The CMK as the KMS itself opens it (file or PKCS#11 backend), never a new one.
        let cmk = kms::server::open_cmk_for_tool(&cfg).await?;
        let key = kms::server::load_or_create_static_key(&cfg, &cmk)?.key;
        let signer = Arc::new(kms::audit::StaticKeySigner(kms_protocol::ServerKey::new(key, &cfg.domain)?));
        let url = cfg.audit_database_url();
        let options = audit::AuditOptions { read_only: true, ..Default::default() };
        let log = audit::AuditLog::open_with(&url, "export", signer, options).await.context("opening the audit log")?;
        let summary = match out {
            Some(p) => {
                // `--out` replaces a file already there, as it always did, but
                // atomically: a failed export leaves the old file, not half a new one.
                let file = secretfile::NewFile::create(p).with_context(|| format!("writing {}", p.display()))?;
                let mut w = tokio::io::BufWriter::new(tokio::fs::File::from_std(file.as_file().try_clone()?));
                let s = log.export_jsonl(&mut w, from_seq).await?;
                tokio::io::AsyncWriteExt::flush(&mut w).await?;
                drop(w);
                tokio::task::spawn_blocking(move || file.publish_replacing())
                    .await
                    .context("writing the export")?
                    .with_context(|| format!("writing {}", p.display()))?;
                s
            }
            None => {
                let mut w = tokio::io::BufWriter::new(tokio::io::stdout());
                let s = log.export_jsonl(&mut w, from_seq).await?;
                tokio::io::AsyncWriteExt::flush(&mut w).await?;
                s
            }
        };
        eprintln!("custos: exported {} entries and {} checkpoints, sealed", summary.entries, summary.checkpoints);
        Ok(())
    })
}

/// `custos kms static-key stage|promote|retire`.
pub fn static_key(config: &Path, action: &str) -> anyhow::Result<()> {
    let cfg = kms::config::Config::load(config)?;
    match action {
        "stage" => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            let k = rt.block_on(async {
                let cmk = kms::server::open_cmk_for_tool(&cfg).await?;
                kms::static_keys::stage(&cfg, &cmk)
            })?;
            println!(
                "staged the next static key: kid {} certificate SHA-256 {}\n\
                 restart each KMS node to serve it beside the current key, distribute the new pin, then `promote`",
                k.key.kid().unwrap_or_default(),
                kms::server::fingerprint(&k.cert_der)
            );
        }
        "promote" => {
            kms::static_keys::promote(&cfg)?;
            println!(
                "the next static key is now current, the old one previous (still served): restart each node; \
                 `retire` once no client pins the old key"
            );
        }
        "retire" => {
            kms::static_keys::retire(&cfg)?;
            println!("the previous static key is destroyed: restart each node");
        }
        other => anyhow::bail!("unknown action {other}"),
    }
    Ok(())
}
