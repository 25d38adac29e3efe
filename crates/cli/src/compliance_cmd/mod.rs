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
//! One module per concept: [`cases`] (the KMS's cases, through the SDK),
//! [`export`] (reading the space and writing the export), [`html`] and
//! [`eml`] (the renderings), [`manifest`] (hashes, and `verify`), [`times`].
//!
//! The export directory must be new or empty: nothing is ever overwritten.
//! Everything is written (0600, in 0700 directories) into a staging
//! directory inside it, synced, moved into place, and the manifest comes
//! last: a crash leaves either no manifest or a complete export.

mod cases;
mod eml;
mod export;
mod html;
mod manifest;
mod times;

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};

use crate::output::Out;
use crate::profile;

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
        return manifest::verify(dir, out);
    }
    let dir = profile::config_dir(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        match cmd {
            ComplianceCommand::Case { command } => cases::run(&dir, command, out).await.map(|()| true),
            ComplianceCommand::Export { space, on_behalf_of, case, from, to, format, out: dest, files } => {
                let req = export::ExportRequest { space, on_behalf_of, case, from, to, formats: format, dest, files };
                export::export(&dir, req, out).await.map(|()| true)
            }
            ComplianceCommand::Verify { .. } => unreachable!("handled above"),
        }
    })
}

