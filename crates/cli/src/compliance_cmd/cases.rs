//! `custos compliance case …`: the KMS's compliance cases, through the SDK
//! ([`client::Session::open_case`], [`client::Session::decide_case`],
//! [`client::Session::cases`]). Space ids are resolved to KMS resource URIs
//! through the core ([`client::Session::case_resource`]).

use std::path::Path;

use anyhow::Context;
use client::engine::cases::NewCase;
use kms_protocol::policy::{CaseDecision, CaseObject};
use kms_protocol::KmsUri;
use serde_json::{json, Value};

use super::times::parse_time;
use super::CaseCommand;
use crate::output::text::safe;
use crate::output::Out;

/// A space id (resolved through the core) or a resource URI, as a canonical resource URI.
async fn resource_of(s: &client::Session, arg: &str) -> anyhow::Result<KmsUri> {
    match s.case_resource(arg).await {
        Ok(u) => Ok(u),
        Err(client::Error::Core { status: 404, .. }) => Err(anyhow::anyhow!(
            "space {}: the core knows no such space for you (as a compliance reader or a member)",
            safe(arg)
        )),
        Err(e @ (client::Error::Invalid(_) | client::Error::Tampered(_))) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("resolving space {}", safe(arg))),
    }
}

/// A KMS refusal of a case operation, in its own words.
fn kms_refusal(e: client::Error, what: String) -> anyhow::Error {
    match e {
        client::Error::NotAuthorized { reason } => anyhow::anyhow!("{what}: the KMS refused: {reason}"),
        e => anyhow::Error::new(e).context(what),
    }
}

/// A case as JSON (as the KMS describes it).
pub(super) fn case_json(c: &CaseObject) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// A case as one line of text.
pub(super) fn case_line(c: &CaseObject) -> String {
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

/// Runs a case command as the logged-in user.
pub(super) async fn run(dir: &Path, cmd: CaseCommand, out: Out) -> anyhow::Result<()> {
    let s = crate::session::open(dir).await?;
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
            let c = s
                .open_case(NewCase { spaces: resources, from, until, reason })
                .await
                .map_err(|e| kms_refusal(e, "opening the case".into()))?;
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
            let cases = s.cases().await.map_err(|e| kms_refusal(e, "listing cases".into()))?;
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
    let uri = s.case_uri(case)?;
    let what = match d {
        CaseDecision::Approve => "approve",
        CaseDecision::Deny => "deny",
        CaseDecision::Close => "close",
    };
    let c = s
        .decide_case(&uri, d)
        .await
        .map_err(|e| kms_refusal(e, format!("trying to {what} {uri}")))?;
    out.print(|| case_line(&c), json!({"case": case_json(&c)}));
    Ok(())
}
