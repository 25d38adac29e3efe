//! `custos compliance …`: compliance cases at the org's KMS, decrypted
//! exports of a space for its compliance officers, and offline checks of an
//! export's manifest.
//!
//! - `case open|approve|deny|close|list`: the KMS's compliance cases (an
//!   officer opens one naming spaces and a time range; designated approvers
//!   decide). Space ids are resolved to KMS resource URIs through the core.
//! - `export`: reads the space through the core's compliance path and the
//!   KMS `onBehalfOf` a user of the org (see `client::compliance`), and
//!   writes JSON, HTML and/or RFC 5322 messages, optionally the files, and
//!   `manifest.json` (every file's size and SHA-256, and one SHA-256 over the
//!   sorted list).
//! - `verify`: recomputes every hash of an export and reports the first
//!   mismatch (exit status 1).
//!
//! The export directory must be new or empty: nothing is ever overwritten.
//! Everything is written (0600, in 0700 directories) into a staging
//! directory inside it, synced, moved into place, and the manifest comes
//! last: a crash leaves either no manifest or a complete export.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Subcommand, ValueEnum};
use client::{ComplianceReader, ComplianceSpace, Content, Message};
use kms_protocol::message::RequestBody;
use kms_protocol::policy::{CaseDecision, CaseObject, CaseRequest};
use kms_protocol::{Kind, KmsUri, Method};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::client_cmd::{is_unsafe_char, message_json, safe, sanitize, Out};
use crate::profile;

/// The manifest's format name.
const FORMAT: &str = "custos-compliance-export/1";
/// The manifest's file name.
const MANIFEST: &str = "manifest.json";
/// Staging directories (inside the export directory) start with this.
const STAGING_PREFIX: &str = ".custos-export-";
/// Largest manifest `verify` reads.
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;

/// `custos compliance …`.
#[derive(Subcommand)]
pub enum ComplianceCommand {
    /// Compliance cases at the org's KMS (when the org requires approval,
    /// an officer's reads need an approved case covering the space).
    Case {
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// Export a space, decrypted, as a compliance officer: messages (sender,
    /// time, threads, edits, deletions, reactions), files, and a manifest of
    /// hashes. The core must list you as a compliance reader of your org, the
    /// KMS as a compliance officer.
    Export {
        /// The space id.
        #[arg(long)]
        space: String,
        /// Read with the KMS authorizations of this user of your org
        /// (default: a member, current or former, of the space from your org).
        #[arg(long)]
        on_behalf_of: Option<String>,
        /// The approved compliance case (id or kms:// URI) the reads serve.
        #[arg(long = "case")]
        case: Option<String>,
        /// Only events the core stored at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only events the core stored before this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Output formats (repeat, or comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', required = true)]
        format: Vec<Format>,
        /// A new or empty directory for the export.
        #[arg(long)]
        out: PathBuf,
        /// Also download and decrypt the space's files (into files/).
        #[arg(long)]
        files: bool,
    },
    /// Check an export against its manifest: every listed file's size and
    /// SHA-256, the manifest's digest, and nothing unlisted. Exit status 1
    /// with the first mismatch.
    Verify {
        /// The export directory.
        dir: PathBuf,
    },
}

/// `custos compliance case …`.
#[derive(Subcommand)]
pub enum CaseCommand {
    /// Open a case (compliance officers): the spaces it covers and the time
    /// range of the keys (their bind dates) it releases.
    Open {
        /// A space id or its KMS resource URI (repeat for several).
        #[arg(long = "space", required = true)]
        spaces: Vec<String>,
        /// Only keys bound at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Only keys bound before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Why (a matter number; no personal data).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Approve a case (designated approvers; never the officer who opened it).
    Approve {
        /// The case id or kms:// URI.
        case: String,
    },
    /// Deny a case (for good).
    Deny {
        /// The case id or kms:// URI.
        case: String,
    },
    /// Close a case: nothing more is released under it.
    Close {
        /// The case id or kms:// URI.
        case: String,
    },
    /// The cases you are a party to (officer, approver, admin).
    List,
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Format {
    /// `messages.json`: every event as `custos read --json` prints it, with the export's header and files.
    Json,
    /// `messages.html`: one self-contained page (no scripts, nothing loaded from elsewhere).
    Html,
    /// `eml/NNNNNN-<event id>.eml`: one RFC 5322 message per chat event.
    Eml,
}

/// Runs a compliance command; `Ok(false)` when `verify` found a mismatch.
pub fn run(cmd: ComplianceCommand, dir: Option<&Path>, out: Out) -> anyhow::Result<bool> {
    if let ComplianceCommand::Verify { dir } = &cmd {
        return verify(dir, out);
    }
    let dir = profile::config_dir(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        match cmd {
            ComplianceCommand::Case { command } => case(&dir, command, out).await.map(|()| true),
            ComplianceCommand::Export { space, on_behalf_of, case, from, to, format, out: dest, files } => {
                let req = ExportRequest { space, on_behalf_of, case, from, to, formats: format, dest, files };
                export(&dir, req, out).await.map(|()| true)
            }
            ComplianceCommand::Verify { .. } => unreachable!("handled above"),
        }
    })
}

// ------------------------------------------------------------------ times

fn parse_time(s: &str, flag: &str) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{flag} must be an RFC 3339 time (e.g. 2026-03-01T00:00:00Z)"))
}

fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn ms_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| kms_protocol::date::format(&t))
        .unwrap_or_else(|_| format!("{ms} ms"))
}

// ------------------------------------------------------------------ cases

/// `kms://<kms>/cases/<id>` from an id or a URI of this KMS.
fn case_uri(arg: &str, kms_domain: &str) -> anyhow::Result<String> {
    let uri = if arg.starts_with("kms://") {
        KmsUri::parse_absolute(arg).ok()
    } else {
        KmsUri::object(kms_domain, Kind::Cases, arg).ok()
    };
    match uri {
        Some(u) if u.is_object(Kind::Cases) && u.domain() == kms_domain => Ok(u.to_string()),
        _ => bail!("{} is not a compliance case of {kms_domain} (an id, or kms://{kms_domain}/cases/<id>)", safe(arg)),
    }
}

/// A space id (resolved through the core) or a resource URI, as a canonical resource URI.
async fn resource_of(s: &client::Session, arg: &str) -> anyhow::Result<String> {
    if arg.starts_with("kms://") {
        let u = KmsUri::parse_absolute(arg).ok().filter(|u| u.is_object(Kind::Resources));
        return Ok(u.with_context(|| format!("{} is not a KMS resource URI", safe(arg)))?.to_string());
    }
    // Officers are compliance readers at the core; members may name their own spaces.
    let claimed = match s.core().compliance_space(arg).await {
        Ok(c) => c.space.resource_uri,
        Err(client::Error::Core { status: 404, .. }) => {
            s.core()
                .space(arg)
                .await
                .with_context(|| {
                    format!(
                        "space {}: the core knows no such space for you (as a compliance reader or a member)",
                        safe(arg)
                    )
                })?
                .0
                .resource_uri
        }
        Err(e) => return Err(e).with_context(|| format!("resolving space {}", safe(arg))),
    };
    let u = KmsUri::parse_absolute(&claimed).ok().filter(|u| u.is_object(Kind::Resources));
    Ok(u.with_context(|| format!("the core names no valid resource for space {}", safe(arg)))?.to_string())
}

/// A KMS refusal of a case operation, in its own words.
fn kms_refusal(e: client::Error, what: String) -> anyhow::Error {
    match e {
        client::Error::NotAuthorized { reason } => anyhow::anyhow!("{what}: the KMS refused: {reason}"),
        e => anyhow::Error::new(e).context(what),
    }
}

fn case_json(c: &CaseObject) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

fn case_line(c: &CaseObject) -> String {
    let state = serde_json::to_value(c.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let range = match (&c.from, &c.until) {
        (None, None) => String::new(),
        (f, u) => format!(
            " keys bound {} .. {}",
            f.map(|d| kms_protocol::date::format(&d)).unwrap_or_default(),
            u.map(|d| kms_protocol::date::format(&d)).unwrap_or_default()
        ),
    };
    format!(
        "{}  {state} ({}/{} approvals)  officer {}  spaces {}{range}{}",
        c.uri,
        c.approvals.len(),
        c.required,
        safe(&c.officer),
        safe(&c.spaces.join(", ")),
        c.reason.as_deref().map(|r| format!("  reason {:?}", safe(r))).unwrap_or_default()
    )
}

async fn case(dir: &Path, cmd: CaseCommand, out: Out) -> anyhow::Result<()> {
    let s = crate::client_cmd::open(dir).await?;
    let kms = s.kms();
    match cmd {
        CaseCommand::Open { spaces, from, until, reason } => {
            let from = from.as_deref().map(|f| parse_time(f, "--from")).transpose()?;
            let until = until.as_deref().map(|u| parse_time(u, "--until")).transpose()?;
            if let (Some(f), Some(u)) = (from, until) {
                anyhow::ensure!(f < u, "--from must be before --until");
            }
            let mut resources = Vec::new();
            for sp in &spaces {
                resources.push(resource_of(&s, sp).await?);
            }
            let body = RequestBody {
                case: Some(CaseRequest { spaces: resources, from, until, reason }),
                ..RequestBody::default()
            };
            let resp = kms
                .call(Method::Create, "/cases", body)
                .await
                .map_err(|e| kms_refusal(e, "opening the case".into()))?;
            let c = resp.case.context("the KMS answered without the case")?;
            out.print(
                || {
                    format!(
                        "Opened case {} ({} approval(s) needed)\n{}",
                        c.uri,
                        c.required.saturating_sub(c.approvals.len() as u32),
                        case_line(&c)
                    )
                },
                json!({"case": case_json(&c)}),
            );
        }
        CaseCommand::Approve { case } => decide(&s, &case, CaseDecision::Approve, out).await?,
        CaseCommand::Deny { case } => decide(&s, &case, CaseDecision::Deny, out).await?,
        CaseCommand::Close { case } => decide(&s, &case, CaseDecision::Close, out).await?,
        CaseCommand::List => {
            let resp = kms
                .call(Method::Retrieve, "/cases", RequestBody::default())
                .await
                .map_err(|e| kms_refusal(e, "listing cases".into()))?;
            let cases = resp.cases.unwrap_or_default();
            if out.json {
                println!("{}", json!({"cases": cases.iter().map(case_json).collect::<Vec<_>>()}));
            } else if cases.is_empty() {
                println!("No compliance cases.");
            } else {
                for c in &cases {
                    println!("{}", case_line(c));
                }
            }
        }
    }
    Ok(())
}

async fn decide(s: &client::Session, case: &str, d: CaseDecision, out: Out) -> anyhow::Result<()> {
    let uri = case_uri(case, s.kms().domain())?;
    let body = RequestBody { decision: Some(d), ..RequestBody::default() };
    let what = match d {
        CaseDecision::Approve => "approve",
        CaseDecision::Deny => "deny",
        CaseDecision::Close => "close",
    };
    let resp = s
        .kms()
        .call(Method::Update, &uri, body)
        .await
        .map_err(|e| kms_refusal(e, format!("trying to {what} {uri}")))?;
    let c = resp.case.context("the KMS answered without the case")?;
    out.print(|| case_line(&c), json!({"case": case_json(&c)}));
    Ok(())
}

// ------------------------------------------------------------------ export

struct ExportRequest {
    space: String,
    on_behalf_of: Option<String>,
    case: Option<String>,
    from: Option<String>,
    to: Option<String>,
    formats: Vec<Format>,
    dest: PathBuf,
    files: bool,
}

/// What heads every output: who read what, when, under which case.
struct Header {
    space: ComplianceSpace,
    from: Option<String>,
    to: Option<String>,
    officer: String,
    subject: String,
    case: Option<String>,
    generated_at: String,
}

impl Header {
    fn json(&self) -> Value {
        json!({
            "format": FORMAT,
            "space": {
                "id": self.space.id,
                "resource": self.space.resource.to_string(),
                "title": self.space.title,
                "members": self.space.members.iter().map(|(u, r)| json!({"user": u, "role": r})).collect::<Vec<_>>(),
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
struct FileEntry {
    id: String,
    info: Result<client::FileInfo, String>,
    /// Where it was written (relative to the export), with `--files`.
    path: Option<String>,
    /// Why it was not downloaded, with `--files`.
    download_error: Option<String>,
}

impl FileEntry {
    fn json(&self) -> Value {
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
fn plain_id(s: &str) -> Option<&str> {
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

async fn export(dir: &Path, req: ExportRequest, out: Out) -> anyhow::Result<()> {
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
    let (cfg, tokens) = crate::client_cmd::logged_in(dir).await?;
    let mut reader = ComplianceReader::open(cfg, tokens).await?;
    let record = reader.space_record(space_id).await.map_err(|e| match e {
        client::Error::Core { status: 404, .. } => anyhow::anyhow!(
            "space {space_id}: the core shows you no such space: it must exist, have (or have had) a member of your org, and the core must list you as a compliance reader of your org"
        ),
        e => anyhow::Error::new(e).context(format!("reading space {space_id} from the core")),
    })?;
    let subject = match &req.on_behalf_of {
        Some(s) => s.clone(),
        None => reader.default_subject(&record).with_context(|| {
            format!("space {space_id} has no member (current or former) of your org to read on behalf of: pass --on-behalf-of")
        })?,
    };
    let case = req.case.as_deref().map(|c| case_uri(c, reader.kms().domain())).transpose()?;
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
                let info = reader.file_info(&h.space, t).await.map_err(|e| e.to_string());
                files.push(FileEntry { id: t.clone(), info, path: None, download_error: None });
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
            match reader.download(&h.space, id, &staging.join(&rel), &|_, _| {}).await {
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
        space: ManifestSpace { id: h.space.id.clone(), resource: h.space.resource.to_string() },
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

// ------------------------------------------------------------------ HTML

/// Text from others as HTML: escaped, line breaks kept, control and
/// bidirectional formatting characters shown as visible escapes.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>"),
            c if is_unsafe_char(c) => {
                let _ = write!(out, "<span class=\"esc\">\\u{{{:x}}}</span>", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An id for `id="…"`/`href="#…"`: only `[A-Za-z0-9-]` survives.
fn anchor(id: &str) -> String {
    let clean: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    format!("e-{clean}")
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}\
table.meta td{padding:.1em .8em .1em 0;vertical-align:top}table.meta td:first-child{color:#666}\
ol.events{list-style:none;padding:0}ol.events li{border-top:1px solid #ddd;padding:.5em 0}\
.head{color:#555;font-size:.9em}.sender{font-weight:600;color:#222}.kind{font-style:italic}\
.text{white-space:normal;margin-top:.2em;overflow-wrap:anywhere}.unreadable{color:#a00}.deleted{text-decoration:line-through}\
.esc{background:#fee;color:#a00;font-family:monospace}.note{color:#666;font-size:.9em}";

fn render_html(h: &Header, msgs: &[Message], files: &[FileEntry]) -> String {
    let seq_of: HashMap<&str, i64> = msgs.iter().map(|m| (m.id.as_str(), m.seq)).collect();
    let mut later: HashMap<&str, Vec<&Message>> = HashMap::new();
    for m in msgs {
        if matches!(m.content, Content::Edit(_) | Content::Deleted | Content::Reaction(_)) {
            if let Some(t) = &m.target {
                later.entry(t.as_str()).or_default().push(m);
            }
        }
    }
    let link = |id: &str| match seq_of.get(id) {
        Some(seq) => format!("<a href=\"#{}\">#{seq}</a>", anchor(id)),
        None => format!("{} (outside the export)", html(id)),
    };
    let mut o = String::new();
    let title = html(&h.space.title);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>Compliance export: {title}</title>\n<style>{STYLE}</style></head>\n<body>\n\
         <h1>{title}</h1>\n<table class=\"meta\">\n"
    );
    let members: Vec<String> = h.space.members.iter().map(|(u, r)| format!("{u} ({r})")).collect();
    let rows = [
        ("Space", h.space.id.clone()),
        ("KMS resource", h.space.resource.to_string()),
        ("Members", members.join(", ")),
        ("Former members", h.space.former_members.join(", ")),
        ("From", h.from.clone().unwrap_or_else(|| "the beginning".into())),
        ("To", h.to.clone().unwrap_or_else(|| "the export".into())),
        ("Officer", h.officer.clone()),
        ("On behalf of", h.subject.clone()),
        ("Case", h.case.clone().unwrap_or_else(|| "none".into())),
        ("Generated", h.generated_at.clone()),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><td>{k}</td><td>{}</td></tr>", html(&v));
    }
    o.push_str("</table>\n<h2>Events</h2>\n<ol class=\"events\">\n");
    for m in msgs {
        let (kind, body, class) = match &m.content {
            Content::Text(t) => {
                let kind = match &m.parent {
                    Some(p) => format!("reply in the thread of {}", link(p)),
                    None => "message".into(),
                };
                (kind, html(t), "text")
            }
            Content::Edit(t) => {
                (format!("edit of {}", m.target.as_deref().map(&link).unwrap_or_default()), html(t), "text")
            }
            Content::Deleted => {
                (format!("deleted {}", m.target.as_deref().map(&link).unwrap_or_default()), String::new(), "text")
            }
            Content::Reaction(e) => {
                (format!("reaction to {}", m.target.as_deref().map(&link).unwrap_or_default()), html(e), "text")
            }
            Content::Title(t) => ("renamed the space".into(), html(t), "text"),
            Content::MemberAdded { user } => (format!("added {}", html(user)), String::new(), "text"),
            Content::MemberRemoved { user } => (format!("removed {}", html(user)), String::new(), "text"),
            Content::FileReady => (
                format!("shared file {}", html(m.target.as_deref().unwrap_or(""))),
                files
                    .iter()
                    .find(|f| Some(f.id.as_str()) == m.target.as_deref())
                    .and_then(|f| f.info.as_ref().ok())
                    .map(|i| format!("{} ({} bytes)", html(&i.name), i.size))
                    .unwrap_or_default(),
                "text",
            ),
            Content::Unreadable(why) => {
                ("unreadable".into(), format!("[cannot read: {}]", html(why)), "text unreadable")
            }
        };
        let mut notes = String::new();
        if matches!(m.content, Content::Text(_)) {
            for l in later.get(m.id.as_str()).into_iter().flatten() {
                let what = match &l.content {
                    Content::Edit(_) => "edited",
                    Content::Deleted => "deleted",
                    _ => "reacted to",
                };
                let _ = write!(
                    notes,
                    "<div class=\"note\">{what} by {} at {} (<a href=\"#{}\">#{}</a>)</div>",
                    html(&l.sender),
                    html(&ms_rfc3339(l.stored_at)),
                    anchor(&l.id),
                    l.seq
                );
            }
        }
        let _ = writeln!(
            o,
            "<li id=\"{}\"><div class=\"head\">#{} <time>{}</time> <span class=\"sender\">{}</span> <span class=\"kind\">{kind}</span></div><div class=\"{class}\">{body}</div>{notes}</li>",
            anchor(&m.id),
            m.seq,
            html(&ms_rfc3339(m.stored_at)),
            html(&m.sender),
        );
    }
    o.push_str("</ol>\n<h2>Files</h2>\n");
    if files.is_empty() {
        o.push_str("<p>None.</p>\n");
    } else {
        o.push_str("<ul>\n");
        for f in files {
            let what = match &f.info {
                Ok(i) => format!("{} ({} bytes, from {})", html(&i.name), i.size, html(&i.uploader)),
                Err(e) => format!("<span class=\"unreadable\">[cannot read: {}]</span>", html(e)),
            };
            let saved = match (&f.path, &f.download_error) {
                (Some(p), _) => format!(" saved as {}", html(p)),
                (None, Some(e)) => format!(" <span class=\"unreadable\">not downloaded: {}</span>", html(e)),
                _ => String::new(),
            };
            let _ = writeln!(o, "<li>{}: {what}{saved}</li>", html(&f.id));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</body></html>\n");
    o
}

// ------------------------------------------------------------------ RFC 5322

/// An unstructured header value: as is when plain printable ASCII, else
/// RFC 2047 encoded words (UTF-8, base64), folded; never a line break.
fn header_text(name: &str, value: &str) -> String {
    let plain = value.len() <= 900 && !value.contains("=?") && value.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        return format!("{name}: {value}\r\n");
    }
    format!("{name}: {}\r\n", encoded_words(value))
}

/// `value` as RFC 2047 encoded words (UTF-8, base64), folded between words.
fn encoded_words(value: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        // 30 bytes: 40 base64 characters, so that every line stays within 78 even after a long header name.
        if chunk.len() + c.len_utf8() > 30 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(chunk);
    }
    let encoded: Vec<String> = words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w.as_bytes())))
        .collect();
    encoded.join("\r\n ")
}

/// A mailbox for a user id: the id itself when it is a plain address, else
/// an encoded display name and a placeholder address.
fn mailbox(user: &str) -> String {
    let ok_local = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    let ok_domain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
    match user.rsplit_once('@') {
        Some((l, d)) if ok_local(l) && ok_domain(d) && !l.starts_with('.') && !l.ends_with('.') => format!("<{user}>"),
        // A display name with specials (quotes, angle brackets) would change
        // the header's structure: always encoded.
        _ => format!("{} <unknown@invalid.invalid>", encoded_words(user)),
    }
}

fn message_id(event: &str, space: &str) -> Option<String> {
    Some(format!("<{}@{}.custos.invalid>", plain_id(event)?, plain_id(space)?))
}

/// One chat event as an RFC 5322 message (CRLF line ends, body base64).
fn render_eml(h: &Header, m: &Message) -> Option<String> {
    let (kind, body, subject) = match &m.content {
        Content::Text(t) if m.parent.is_some() => ("reply", t.clone(), t.clone()),
        Content::Text(t) => ("message", t.clone(), t.clone()),
        Content::Edit(t) => ("edit", t.clone(), format!("Edit: {t}")),
        Content::Deleted => ("delete", String::new(), "Deleted message".into()),
        Content::Reaction(e) => ("reaction", e.clone(), format!("Reaction: {e}")),
        Content::Unreadable(why) => ("unreadable", format!("[cannot read: {why}]"), "Unreadable event".into()),
        _ => return None,
    };
    let subject: String =
        subject.lines().next().unwrap_or("").chars().filter(|c| !is_unsafe_char(*c)).take(78).collect();
    let date = OffsetDateTime::from_unix_timestamp_nanos(i128::from(m.stored_at) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc2822).ok())?;
    let mut o = String::new();
    o.push_str(&format!("From: {}\r\n", mailbox(&m.sender)));
    o.push_str(&format!("Date: {date}\r\n"));
    if let Some(id) = message_id(&m.id, &h.space.id) {
        o.push_str(&format!("Message-ID: {id}\r\n"));
    }
    let related = m.parent.as_deref().or(m.target.as_deref());
    if let Some(r) = related.and_then(|r| message_id(r, &h.space.id)) {
        o.push_str(&format!("In-Reply-To: {r}\r\nReferences: {r}\r\n"));
    }
    o.push_str(&header_text("Subject", &subject));
    o.push_str(&header_text("X-Custos-Space", &h.space.id));
    o.push_str(&header_text("X-Custos-Space-Title", &h.space.title));
    o.push_str(&format!("X-Custos-Kind: {kind}\r\nX-Custos-Seq: {}\r\n", m.seq));
    o.push_str(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    for line in b64.as_bytes().chunks(76) {
        o.push_str(std::str::from_utf8(line).unwrap_or(""));
        o.push_str("\r\n");
    }
    Some(o)
}

// ------------------------------------------------------------------ manifest

/// How `digest` is computed.
const DIGEST_RULE: &str = "sha256 over, for each file sorted by name: name, NUL, sha256 (lowercase hex), LF";

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    space: ManifestSpace,
    range: ManifestRange,
    officer: String,
    subject: String,
    case: Option<String>,
    generated_at: String,
    digest_rule: String,
    files: Vec<ManifestFile>,
    digest: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestSpace {
    id: String,
    resource: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestRange {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_file(p: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).with_context(|| format!("reading {}", p.display()))?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(ctx.finish().as_ref())))
}

fn list_digest(list: &[ManifestFile]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut sorted: Vec<&ManifestFile> = list.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for f in sorted {
        ctx.update(f.name.as_bytes());
        ctx.update(b"\0");
        ctx.update(f.sha256.as_bytes());
        ctx.update(b"\n");
    }
    hex(ctx.finish().as_ref())
}

/// Every regular file under `root` (relative names with `/`), sorted, with
/// size and SHA-256; the manifest and staging leftovers are skipped. Anything
/// that is neither a file nor a directory (a link, a device) is an error.
fn hash_tree(root: &Path, skip_manifest: bool) -> anyhow::Result<Vec<ManifestFile>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<ManifestFile>, skip_manifest: bool) -> anyhow::Result<()> {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name =
                e.file_name().into_string().map_err(|n| anyhow::anyhow!("a file name that is not UTF-8: {n:?}"))?;
            if rel.is_empty() && ((skip_manifest && name == MANIFEST) || name.starts_with(STAGING_PREFIX)) {
                continue;
            }
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let t = e.file_type()?;
            if t.is_dir() {
                walk(root, &path, out, skip_manifest)?;
            } else if t.is_file() {
                let (size, sha256) = sha256_file(&root.join(&path))?;
                out.push(ManifestFile { name: path, size, sha256 });
            } else {
                bail!("{path} is not a regular file");
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", &mut out, skip_manifest)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A safe relative name: `a/b`, no `..`, no empty or hidden-root tricks.
fn safe_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with('/')
        && n.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !n.chars().any(|c| c == '\\' || c.is_control())
}

/// What `verify` found wrong: a kind (`manifest`, `digest`, `missing`,
/// `not_a_file`, `modified`, `unlisted`), the file, and what.
struct Problem {
    kind: &'static str,
    file: String,
    detail: String,
}

/// The manifest if everything matches it, else the first problem found.
fn check_export(dir: &Path) -> anyhow::Result<Result<Manifest, Problem>> {
    let problem = |kind: &'static str, file: &str, detail: String| Ok(Err(Problem { kind, file: file.into(), detail }));
    let mpath = dir.join(MANIFEST);
    let meta = match std::fs::symlink_metadata(&mpath) {
        Ok(m) => m,
        Err(_) => return problem("manifest", MANIFEST, "there is no manifest.json: not a complete export".into()),
    };
    if !meta.is_file() || meta.len() > MAX_MANIFEST {
        return problem("manifest", MANIFEST, "manifest.json is not a regular file of sane size".into());
    }
    let text = std::fs::read(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    let m: Manifest = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => return problem("manifest", MANIFEST, format!("manifest.json is not a manifest ({e})")),
    };
    if m.format != FORMAT {
        return problem("manifest", MANIFEST, format!("unknown format {:?}", safe(&m.format)));
    }
    let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    if names.windows(2).any(|w| w[0] >= w[1]) {
        return problem("manifest", MANIFEST, "the file list is not sorted by name without repeats".into());
    }
    if let Some(bad) = m.files.iter().find(|f| !safe_name(&f.name) || f.name == MANIFEST) {
        return problem("manifest", &bad.name, "a listed name that is not a plain relative path".into());
    }
    let digest = list_digest(&m.files);
    if digest != m.digest {
        return problem(
            "digest",
            MANIFEST,
            format!("the digest over the file list is {digest}, the manifest says {}", m.digest),
        );
    }
    for f in &m.files {
        let p = dir.join(&f.name);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => return problem("missing", &f.name, "listed in the manifest, not in the directory".into()),
        };
        if !meta.is_file() {
            return problem("not_a_file", &f.name, "not a regular file".into());
        }
        let (size, sha) = sha256_file(&p)?;
        if size != f.size {
            return problem("modified", &f.name, format!("{size} bytes, the manifest says {}", f.size));
        }
        if sha != f.sha256 {
            return problem("modified", &f.name, format!("SHA-256 {sha}, the manifest says {}", f.sha256));
        }
    }
    let listed: HashSet<&str> = names.iter().copied().collect();
    let present = match hash_tree(dir, true) {
        Ok(p) => p,
        Err(e) => return problem("unlisted", "", format!("{e:#}")),
    };
    if let Some(extra) = present.iter().find(|p| !listed.contains(p.name.as_str())) {
        return problem("unlisted", &extra.name, "in the directory, not in the manifest".into());
    }
    Ok(Ok(m))
}

fn verify(dir: &Path, out: Out) -> anyhow::Result<bool> {
    match check_export(dir)? {
        Ok(m) => {
            let n = m.files.len();
            let leftovers: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(STAGING_PREFIX))
                .collect();
            out.print(
                || {
                    let mut s = format!(
                        "OK: {n} file(s) match the manifest (digest {}).\nSpace {} ({}), officer {}, on behalf of {}, case {}, generated {}.\nThe manifest shows the export is complete and unchanged since it was written; it is not signed, so it does not show who wrote it.",
                        m.digest,
                        safe(&m.space.id),
                        safe(&m.space.resource),
                        safe(&m.officer),
                        safe(&m.subject),
                        m.case.as_deref().map(safe).unwrap_or_else(|| "none".into()),
                        safe(&m.generated_at)
                    );
                    for l in &leftovers {
                        let _ = write!(s, "\nNote: {} is left over from an interrupted export (not part of it; safe to delete).", safe(l));
                    }
                    s
                },
                json!({"ok": true, "files": n, "digest": m.digest, "space": m.space.id, "officer": m.officer, "subject": m.subject, "case": m.case, "leftovers": leftovers}),
            );
            Ok(true)
        }
        Err(Problem { kind, file, detail }) => {
            out.print(
                || format!("MISMATCH ({kind}) {}: {}", safe(&file), safe(&detail)),
                json!({"ok": false, "problem": {"kind": kind, "file": file, "detail": detail}}),
            );
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_from_others() {
        let s = html("<script>alert('x')</script> & \"q\" \u{202E}evil\n2nd");
        assert!(!s.contains('<') || s.contains("<br>") || s.contains("<span"));
        assert!(!s.contains("<script"));
        assert!(s.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"));
        assert!(s.contains("\\u{202e}") && !s.contains('\u{202E}'));
        assert!(s.contains("<br>2nd"));
        assert_eq!(anchor("a\"><script>"), "e-ascript");
    }

    #[test]
    fn headers_never_break_lines_and_encode_non_ascii() {
        let h = header_text("Subject", "hi\r\nBcc: victim@example.com");
        assert_eq!(h.matches("\r\n").count(), 1, "{h:?}");
        assert!(h.starts_with("Subject: =?UTF-8?B?"));
        let h = header_text("Subject", &"é".repeat(100));
        for (i, line) in h.trim_end_matches("\r\n").split("\r\n").enumerate() {
            assert!(line.len() <= 78, "{line}");
            assert!(i == 0 || line.starts_with(' '));
        }
        assert_eq!(header_text("Subject", "plain words"), "Subject: plain words\r\n");
        assert!(header_text("Subject", "looks =?UTF-8?B?encoded?=").contains("=?UTF-8?B?"));
        assert_eq!(mailbox("alice@acme.test"), "<alice@acme.test>");
        let m = mailbox("eve\"<x>@acme.test");
        assert!(m.ends_with("<unknown@invalid.invalid>") && !m.contains('"'), "{m}");
        assert_eq!(message_id("../x", "s"), None);
    }

    #[test]
    fn digest_is_over_the_sorted_list() {
        let a = ManifestFile { name: "a".into(), size: 1, sha256: "00".into() };
        let b = ManifestFile { name: "b".into(), size: 1, sha256: "11".into() };
        assert_eq!(list_digest(&[a.clone(), b.clone()]), list_digest(&[b, a]));
        assert!(safe_name("eml/000001-x.eml"));
        for bad in ["", "/etc/passwd", "../x", "a//b", "a/./b", "a\\b"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }
}
