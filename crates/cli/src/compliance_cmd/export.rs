//! `custos compliance export`: reads a space through the core's compliance
//! path and the KMS `onBehalfOf` a user of the org ([`client::ComplianceReader`]),
//! and writes it into a private staging directory, moved into place, the
//! manifest last.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use client::{ComplianceReader, ComplianceSpace, Content, FileId, Message, SpaceId};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::eml::render_eml;
use super::html::render_html;
use super::manifest::{hash_tree, list_digest, Manifest, ManifestRange, ManifestSpace, DIGEST_RULE, FORMAT, MANIFEST, STAGING_PREFIX};
use super::times::{parse_time, to_ms};
use super::Format;
use crate::output::message::message_json;
use crate::output::text::{safe, sanitize};
use crate::output::Out;

pub(super) struct ExportRequest {
    pub(super) space: String,
    pub(super) on_behalf_of: Option<String>,
    pub(super) case: Option<String>,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) formats: Vec<Format>,
    pub(super) dest: PathBuf,
    pub(super) files: bool,
}

/// What heads every output: who read what, when, under which case.
pub(super) struct Header {
    pub(super) space: ComplianceSpace,
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) officer: String,
    pub(super) subject: String,
    pub(super) case: Option<String>,
    pub(super) generated_at: String,
}

impl Header {
    pub(super) fn json(&self) -> Value {
        json!({
            "format": FORMAT,
            "space": {
                "id": self.space.id,
                "resource": self.space.resource.to_string(),
                "title": self.space.title,
                "members": self.space.members.iter().map(|m| json!({"user": m.user, "role": m.role})).collect::<Vec<_>>(),
                "former_members": self.space.former_members,
            },
            "range": {"from": self.from, "to": self.to},
            "officer": self.officer,
            "subject": self.subject,
            "case": self.case,
            "generated_at": self.generated_at,
        })
    }
}

/// A file of the space, as listed in the export.
pub(super) struct FileEntry {
    pub(super) id: String,
    pub(super) info: Result<client::FileInfo, String>,
    /// Where it was written (relative to the export), with `--files`.
    pub(super) path: Option<String>,
    /// Why it was not downloaded, with `--files`.
    pub(super) download_error: Option<String>,
}

impl FileEntry {
    pub(super) fn json(&self) -> Value {
        let mut v = match &self.info {
            Ok(i) => json!({"id": self.id, "name": i.name, "size": i.size, "uploader": i.uploader, "ready": i.ready}),
            Err(e) => json!({"id": self.id, "error": e}),
        };
        if let Some(p) = &self.path {
            v["path"] = json!(p);
        }
        if let Some(e) = &self.download_error {
            v["download_error"] = json!(e);
        }
        v
    }
}

/// Only `[A-Za-z0-9-]`, else `None` (ids the core hands out look like that).
pub(super) fn plain_id(s: &str) -> Option<&str> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(s)
}

/// Creates `out` (0700) if missing (then `true`); it must be an empty directory.
fn prepare_out(out: &Path) -> anyhow::Result<bool> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
            if entries.next().is_some() {
                if out.join(MANIFEST).exists() {
                    bail!(
                        "{} already holds an export (manifest.json): nothing is overwritten; choose a new directory",
                        out.display()
                    );
                }
                bail!(
                    "{} is not empty: an export goes into a new or empty directory (nothing is overwritten)",
                    out.display()
                );
            }
            Ok(false)
        }
        Ok(_) => bail!("{} exists and is not a directory", out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            secretfile::create_dir(out).map(|()| true).with_context(|| format!("creating {}", out.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", out.display())),
    }
}

// An export is written into a private staging directory of its own, file by
// file (created exclusively, 0600, each fsynced; the directory fsynced once),
// moved into the export directory, and completed by the manifest: so the files
// need no temporary names of their own, and nothing is ever overwritten.

fn mkdir_private(p: &Path) -> anyhow::Result<()> {
    secretfile::create_dir(p).with_context(|| format!("creating {}", p.display()))
}

/// Writes a new file (never an existing one), mode 0600, synced.
fn write_private(p: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    secretfile::write_exclusive(p, bytes).with_context(|| format!("writing {}", p.display()))
}

fn sync_dir(p: &Path) -> anyhow::Result<()> {
    secretfile::sync_dir(p).with_context(|| format!("syncing {}", p.display()))
}

pub(super) async fn export(dir: &Path, req: ExportRequest, out: Out) -> anyhow::Result<()> {
    let from = req.from.as_deref().map(|f| parse_time(f, "--from")).transpose()?;
    let to = req.to.as_deref().map(|t| parse_time(t, "--to")).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        anyhow::ensure!(f < t, "--from must be before --to");
    }
    plain_id(&req.space).with_context(|| format!("{} is not a space id", safe(&req.space)))?;
    let created = prepare_out(&req.dest)?;
    let result = export_into(dir, &req, from, to, out).await;
    if result.is_err() && created {
        // Only if still empty: a failed export leaves nothing behind.
        let _ = std::fs::remove_dir(&req.dest);
    }
    result
}

async fn export_into(
    dir: &Path,
    req: &ExportRequest,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    out: Out,
) -> anyhow::Result<()> {
    let space_id = req.space.as_str();
    let (cfg, tokens) = crate::session::logged_in(dir).await?;
    let mut reader = ComplianceReader::open(cfg, tokens).await?;
    let record = reader.space_record(&SpaceId::from(space_id)).await.map_err(|e| match e {
        client::Error::Core { status: 404, .. } => anyhow::anyhow!(
            "space {space_id}: the core shows you no such space: it must exist, have (or have had) a member of your org, and the core must list you as a compliance reader of your org"
        ),
        e => anyhow::Error::new(e).context(format!("reading space {space_id} from the core")),
    })?;
    let subject = match &req.on_behalf_of {
        Some(s) => s.clone(),
        None => reader.default_subject(&record).map(String::from).with_context(|| {
            format!("space {space_id} has no member (current or former) of your org to read on behalf of: pass --on-behalf-of")
        })?,
    };
    let case = req
        .case
        .as_deref()
        .map(|c| client::engine::cases::case_uri(c, reader.kms().domain()).map(|u| u.to_string()))
        .transpose()?;
    let refusal_hint = |e: &client::Error| -> String {
        match e {
            client::Error::NotAuthorized { reason } if reason.contains("onBehalfOf") => {
                " (the org's KMS policy must list you under complianceOfficers)".into()
            }
            client::Error::NotAuthorized { reason } if reason.contains("caseId") => {
                " (open one with `custos compliance case open --space …`, have it approved, and pass --case)".into()
            }
            _ => String::new(),
        }
    };
    if let Err(e) = reader.act_for(&subject, case.as_deref()).await {
        let hint = refusal_hint(&e);
        return Err(anyhow::Error::new(e).context(format!(
            "the KMS refused to let {} read on behalf of {}{hint}",
            reader.officer(),
            safe(&subject)
        )));
    }
    let space = match reader.verify_space(&record).await {
        Ok(s) => s,
        Err(e) => {
            let hint = refusal_hint(&e);
            return Err(anyhow::Error::new(e)
                .context(format!("reading space {space_id}'s sealed metadata on behalf of {}{hint}", safe(&subject))));
        }
    };
    let msgs = reader.messages(&space, from.map(to_ms), to.map(to_ms)).await.context("reading the space's events")?;
    let header = Header {
        space,
        from: from.map(|t| kms_protocol::date::format(&t)),
        to: to.map(|t| kms_protocol::date::format(&t)),
        officer: reader.officer().to_string(),
        subject: subject.clone(),
        case: case.clone(),
        generated_at: kms_protocol::date::format(&OffsetDateTime::now_utc()),
    };

    let staging = req.dest.join(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    mkdir_private(&staging)?;
    let mut moved: Vec<PathBuf> = Vec::new();
    let result = write_export(&reader, &header, &msgs, req, &staging, &mut moved).await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            // Nothing half-done stays behind (and there is no manifest).
            for p in &moved {
                let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
            }
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let unreadable = msgs.iter().filter(|m| matches!(m.content, Content::Unreadable(_))).count();
    if out.json {
        println!(
            "{}",
            json!({
                "out": req.dest,
                "space": header.space.id,
                "resource": header.space.resource.to_string(),
                "officer": header.officer,
                "subject": header.subject,
                "case": header.case,
                "events": msgs.len(),
                "unreadable": unreadable,
                "files": manifest.files.iter().map(|f| json!({"name": f.name, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
                "digest": manifest.digest,
            })
        );
    } else {
        println!(
            "Exported {} event(s) of space {} ({}) on behalf of {}{} to {}",
            msgs.len(),
            header.space.id,
            safe(&header.space.title),
            safe(&header.subject),
            header.case.as_deref().map(|c| format!(" under case {c}")).unwrap_or_default(),
            req.dest.display()
        );
        if unreadable > 0 {
            println!("Warning: {unreadable} event(s) could not be read (the reason is in the export).");
        }
        println!("{} file(s), manifest digest {}", manifest.files.len(), manifest.digest);
    }
    Ok(())
}

/// Writes everything into `staging`, moves it into the export directory
/// (recording what it moved), then places the manifest.
async fn write_export(
    reader: &ComplianceReader,
    h: &Header,
    msgs: &[Message],
    req: &ExportRequest,
    staging: &Path,
    moved: &mut Vec<PathBuf>,
) -> anyhow::Result<Manifest> {
    // The space's files, from their file_ready events.
    let mut files: Vec<FileEntry> = Vec::new();
    let mut seen = HashSet::new();
    for m in msgs {
        if let (Content::FileReady, Some(t)) = (&m.content, &m.target) {
            if seen.insert(t.clone()) {
                let info = reader.file_info(&h.space, &FileId::from(t.as_str())).await.map_err(|e| e.to_string());
                files.push(FileEntry { id: t.to_string(), info, path: None, download_error: None });
            }
        }
    }
    if req.files && !files.is_empty() {
        let dir = staging.join("files");
        mkdir_private(&dir)?;
        for f in &mut files {
            let (Ok(info), Some(id)) = (&f.info, plain_id(&f.id)) else {
                f.download_error = Some("the file's metadata could not be read".into());
                continue;
            };
            let name: String = sanitize(&info.name).chars().take(100).collect();
            let rel = format!("files/{id}-{name}");
            match reader.download(&h.space, &FileId::from(id), &staging.join(&rel), &|_, _| {}).await {
                Ok(_) => f.path = Some(rel),
                Err(e) => f.download_error = Some(e.to_string()),
            }
        }
    }

    let mut formats = req.formats.clone();
    formats.sort_by_key(|f| *f as u8);
    formats.dedup();
    let mut top: Vec<&str> = Vec::new();
    for f in &formats {
        match f {
            Format::Json => {
                let mut v = h.json();
                v["events"] = json!(msgs.iter().map(message_json).collect::<Vec<_>>());
                v["files"] = json!(files.iter().map(FileEntry::json).collect::<Vec<_>>());
                let mut text = serde_json::to_vec_pretty(&v)?;
                text.push(b'\n');
                write_private(&staging.join("messages.json"), &text)?;
                top.push("messages.json");
            }
            Format::Html => {
                write_private(&staging.join("messages.html"), render_html(h, msgs, &files).as_bytes())?;
                top.push("messages.html");
            }
            Format::Eml => {
                let dir = staging.join("eml");
                mkdir_private(&dir)?;
                for m in msgs {
                    if let (Some(text), Some(id)) = (render_eml(h, m), plain_id(&m.id)) {
                        write_private(&dir.join(format!("{:06}-{id}.eml", m.seq.max(0))), text.as_bytes())?;
                    }
                }
                sync_dir(&dir)?;
                top.push("eml");
            }
        }
    }
    if req.files && !files.is_empty() {
        sync_dir(&staging.join("files"))?;
        top.push("files");
    }
    sync_dir(staging)?;

    // Into place; every name is new (the directory was empty).
    let out = &req.dest;
    for name in &top {
        let (from, to) = (staging.join(name), out.join(name));
        if std::fs::symlink_metadata(&to).is_ok() {
            bail!("{} appeared during the export: not overwritten", to.display());
        }
        std::fs::rename(&from, &to).with_context(|| format!("placing {}", to.display()))?;
        moved.push(to);
    }
    sync_dir(out)?;

    // The manifest last: it exists only over complete, synced data.
    let list = hash_tree(out, true)?;
    let digest = list_digest(&list);
    let manifest = Manifest {
        format: FORMAT.into(),
        space: ManifestSpace { id: h.space.id.to_string(), resource: h.space.resource.to_string() },
        range: ManifestRange { from: h.from.clone(), to: h.to.clone() },
        officer: h.officer.clone(),
        subject: h.subject.clone(),
        case: h.case.clone(),
        generated_at: h.generated_at.clone(),
        digest_rule: DIGEST_RULE.into(),
        files: list,
        digest,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    let staged = staging.join(MANIFEST);
    write_private(&staged, &text)?;
    let dest = out.join(MANIFEST);
    // A hard link never replaces an existing file.
    std::fs::hard_link(&staged, &dest).with_context(|| format!("placing {}", dest.display()))?;
    moved.push(dest);
    sync_dir(out)?;
    let _ = std::fs::remove_dir_all(staging);
    Ok(manifest)
}
