//! `custos kms admin …`: org policy through the KMS's admin API, on the same
//! secure channel as every other KMS request, as the logged-in org admin.
//!
//! Every change goes through [`client::Session::edit_org_policy`]: it reads
//! the policy, this command edits the document, and it is written back
//! naming the version read; when another admin changed it in between, the
//! KMS answers 409 and the change is redone on the new version (up to 5 times).

use std::path::Path;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use client::engine::policy::PolicyChange;
use client::{Session, SpaceId};
use serde_json::{json, Map, Value};

use crate::output::Out;
use crate::profile;
use crate::session::open;

/// Admin commands.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Show the org policy (JSON).
    Show,
    /// Replace the whole policy with a JSON file (as `show` prints it, or just its `policy` member).
    Set {
        /// The file ("-": standard input).
        file: std::path::PathBuf,
    },
    /// Register, scope, revoke or remove a service identity (bot, search, previews, DLP).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Disable or re-enable a user, whatever tokens it holds.
    User {
        /// disable | enable.
        action: Toggle,
        /// The user id (`name` or `name@org`).
        user: String,
    },
    /// Disable or re-enable one client (device) of a user.
    Device {
        /// disable | enable.
        action: Toggle,
        /// The user id.
        user: String,
        /// The client (device) id.
        client_id: String,
    },
    /// Add or remove a compliance officer (may read on behalf of the org's users).
    Officer {
        /// add | remove.
        action: AddRemove,
        /// The user id.
        user: String,
    },
    /// Add or remove an org admin (besides the KMS configuration's bootstrap admins).
    Admin {
        /// add | remove.
        action: AddRemove,
        /// The user id.
        user: String,
    },
    /// Require M of N approvers for compliance releases, or turn it off.
    Approval {
        /// How many approvals (M); 0 turns approval off.
        #[arg(long)]
        required: u32,
        /// The approvers (N), comma-separated.
        #[arg(long, value_delimiter = ',')]
        approvers: Vec<String>,
    },
    /// Set the retention period of content keys in days (0: keep forever).
    Retention {
        /// Days.
        days: u32,
    },
    /// Place or lift a legal hold.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// Federate with another org's KMS (cross-organization spaces), or end it.
    Federation {
        #[command(subcommand)]
        command: FederationCommand,
    },
}

/// Federation with other orgs' KMSs.
#[derive(Subcommand)]
pub enum FederationCommand {
    /// Allow (or re-allow, or update) a peer KMS: our users may read its
    /// spaces as it authorizes them, and it may read ours for its users.
    Allow {
        /// Its KMS domain (`kms.globex.example`, as in its `kms://` URIs).
        kms_domain: String,
        /// The org whose users it speaks for (`globex.example`).
        #[arg(long)]
        org: String,
        /// PEM file: its static key's certificate (pinned; get it from that
        /// org's admin out of band, `custos kms serve` prints its
        /// fingerprint), or the CA that issues it.
        #[arg(long)]
        trust: std::path::PathBuf,
        /// Where it answers; default `https://<kms domain>` (discovery by name).
        #[arg(long)]
        url: Option<String>,
    },
    /// End a federation: from the next request on, nothing is asked of it or answered to it.
    End {
        /// Its KMS domain.
        kms_domain: String,
    },
    /// Remove a peer from the policy altogether (ends the federation too).
    Remove {
        /// Its KMS domain.
        kms_domain: String,
    },
    /// List the peers.
    List,
}

/// Service commands.
#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Allow a service (registering it if new): what it may read.
    Allow {
        /// Its id: a user id for services with tokens, `service:<id>` for certificate services.
        id: String,
        /// bot, search, preview, dlp, compliance or other.
        #[arg(long, default_value = "bot")]
        kind: String,
        /// Spaces (ids or resource URIs), comma-separated; default all of the org's.
        #[arg(long, value_delimiter = ',')]
        spaces: Vec<String>,
        /// participant (needs a member's authorization) and/or orgAgent (every org space in scope).
        #[arg(long, value_delimiter = ',', default_value = "participant")]
        roles: Vec<String>,
        /// Only content (keys) bound at or after this time (RFC 3339).
        #[arg(long)]
        content_from: Option<String>,
        /// Only content bound before this time (RFC 3339).
        #[arg(long)]
        content_until: Option<String>,
    },
    /// Revoke a service: its next request anywhere fails, its sessions are
    /// reset, and every space it could read gets a fresh key on its next message.
    Revoke {
        /// Its id.
        id: String,
    },
    /// Withdraw content from a service: a space, a time range, or both.
    Deny {
        /// Its id.
        id: String,
        /// Only this space (id or resource URI); default every space.
        #[arg(long)]
        space: Option<String>,
        /// From (RFC 3339, inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Until (RFC 3339, exclusive).
        #[arg(long)]
        until: Option<String>,
    },
    /// Remove a service from the registry (a certificate service is then refused; a token service becomes an ordinary user).
    Remove {
        /// Its id.
        id: String,
    },
    /// List the registered services.
    List,
}

/// Legal holds.
#[derive(Subcommand)]
pub enum HoldCommand {
    /// Place a hold: nothing it covers is shredded while it stands.
    Add {
        /// Its name (a matter number).
        name: String,
        /// Users whose spaces it covers, comma-separated.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        /// Spaces (ids or resource URIs), comma-separated.
        #[arg(long, value_delimiter = ',')]
        spaces: Vec<String>,
        /// Why (no personal data).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a hold.
    Remove {
        /// Its name.
        name: String,
    },
}

/// disable | enable.
#[derive(Clone, Copy, ValueEnum)]
pub enum Toggle {
    /// Disable.
    Disable,
    /// Enable again.
    Enable,
}

/// add | remove.
#[derive(Clone, Copy, ValueEnum)]
pub enum AddRemove {
    /// Add.
    Add,
    /// Remove.
    Remove,
}

/// Runs an admin command as the logged-in user.
pub fn run(cmd: AdminCommand, dir: Option<&Path>, out: Out) -> anyhow::Result<()> {
    let dir = profile::config_dir(dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let session = open(&dir).await?;
        command(&session, cmd, out).await
    })
}

/// The policy document in force.
async fn current(session: &Session) -> anyhow::Result<Value> {
    let p = session.org_policy().await.map_err(explain)?;
    Ok(serde_json::to_value(&p.policy)?)
}

fn explain(e: client::Error) -> anyhow::Error {
    match e {
        client::Error::NotAuthorized { reason } => {
            anyhow::anyhow!("the KMS refused: {reason} (org policy is changed by org admins only)")
        }
        other => other.into(),
    }
}

/// Read, edit, write back naming the version read; redone on a conflict.
async fn modify(
    session: &Session,
    edit: impl Fn(&mut Map<String, Value>) -> anyhow::Result<()>,
) -> anyhow::Result<PolicyChange> {
    session.edit_org_policy(edit).await.map_err(|e: anyhow::Error| match e.downcast::<client::Error>() {
        // Conflicts are retried: one that is left means the attempts ran out.
        Ok(client::Error::Kms { status: 409, .. }) => {
            anyhow::anyhow!("the policy kept changing under this command; try again")
        }
        Ok(e) => explain(e),
        Err(e) => e,
    })
}

/// A space id or resource URI → the resource URI.
async fn resource(session: &Session, s: &str) -> anyhow::Result<String> {
    if s.starts_with("kms://") || s.starts_with("/resources/") {
        return Ok(s.to_string());
    }
    let space = session.space(&SpaceId::from(s)).await.with_context(|| {
        format!("space {s} (not a space you are a member of? give its kms://…/resources/… URI instead)")
    })?;
    Ok(space.resource.to_string())
}

fn check_date(field: &str, v: &Option<String>) -> anyhow::Result<()> {
    if let Some(d) = v {
        kms_protocol::date::parse(d).map_err(|_| anyhow::anyhow!("--{field}: not an RFC 3339 date-time: {d}"))?;
    }
    Ok(())
}

fn object<'a>(doc: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = doc.entry(key).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("just made an object")
}

fn list<'a>(doc: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = doc.entry(key).or_insert_with(|| json!([]));
    if !v.is_array() {
        *v = json!([]);
    }
    v.as_array_mut().expect("just made an array")
}

fn add_remove(doc: &mut Map<String, Value>, key: &str, action: AddRemove, user: &str) {
    let l = list(doc, key);
    l.retain(|v| v.as_str() != Some(user));
    if matches!(action, AddRemove::Add) {
        l.push(json!(user));
    }
}

/// `name` → `name@<org of the logged-in user>`, so that comparisons match what the KMS stores.
fn qualify(session: &Session, user: &str) -> String {
    if user.contains('@') || user.starts_with("service:") {
        return user.to_string();
    }
    match session.user_id().rsplit_once('@') {
        Some((_, org)) => format!("{user}@{org}"),
        None => user.to_string(),
    }
}

async fn command(session: &Session, cmd: AdminCommand, out: Out) -> anyhow::Result<()> {
    let resp = match cmd {
        AdminCommand::Show => {
            let p = serde_json::to_value(session.org_policy().await.map_err(explain)?)?;
            println!("{}", if out.json { p.to_string() } else { serde_json::to_string_pretty(&p)? });
            return Ok(());
        }
        AdminCommand::Set { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let v: Value = serde_json::from_str(&text).context("the policy file is not JSON")?;
            // Accept `show`'s output ({version, policy}) or the bare document.
            let new = match v.get("policy") {
                Some(p) if v.get("version").is_some() => p.clone(),
                _ => v,
            };
            let Value::Object(new) = new else { bail!("the policy must be a JSON object") };
            modify(session, |doc| {
                *doc = new.clone();
                Ok(())
            })
            .await?
        }
        AdminCommand::Service { command } => match service(session, command, out).await? {
            Some(r) => r,
            None => return Ok(()),
        },
        AdminCommand::User { action, user } => {
            let user = qualify(session, &user);
            modify(session, |doc| {
                let m = object(doc, "disabledUsers");
                match action {
                    Toggle::Disable => {
                        m.entry(user.clone()).or_insert(json!({}));
                    }
                    Toggle::Enable => {
                        m.remove(&user);
                    }
                }
                Ok(())
            })
            .await?
        }
        AdminCommand::Device { action, user, client_id } => {
            let user = qualify(session, &user);
            modify(session, |doc| {
                let m = object(doc, "disabledClients");
                let d = m.entry(user.clone()).or_insert(json!({}));
                if let Value::Object(d) = d {
                    match action {
                        Toggle::Disable => {
                            d.entry(client_id.clone()).or_insert(json!({}));
                        }
                        Toggle::Enable => {
                            d.remove(&client_id);
                        }
                    }
                }
                m.retain(|_, v| v.as_object().is_some_and(|o| !o.is_empty()));
                Ok(())
            })
            .await?
        }
        AdminCommand::Officer { action, user } => {
            let user = qualify(session, &user);
            modify(session, |doc| {
                add_remove(doc, "complianceOfficers", action, &user);
                Ok(())
            })
            .await?
        }
        AdminCommand::Admin { action, user } => {
            let user = qualify(session, &user);
            modify(session, |doc| {
                add_remove(doc, "admins", action, &user);
                Ok(())
            })
            .await?
        }
        AdminCommand::Approval { required, approvers } => {
            let approvers: Vec<String> = approvers.iter().map(|a| qualify(session, a)).collect();
            modify(session, |doc| {
                if required == 0 {
                    doc.remove("approval");
                } else {
                    doc.insert("approval".into(), json!({"required": required, "approvers": approvers}));
                }
                Ok(())
            })
            .await?
        }
        AdminCommand::Retention { days } => {
            modify(session, |doc| {
                if days == 0 {
                    doc.remove("retention");
                } else {
                    doc.insert("retention".into(), json!({"days": days}));
                }
                Ok(())
            })
            .await?
        }
        AdminCommand::Hold { command: HoldCommand::Add { name, users, spaces, reason } } => {
            let users: Vec<String> = users.iter().map(|u| qualify(session, u)).collect();
            let mut res = Vec::new();
            for s in &spaces {
                res.push(resource(session, s).await?);
            }
            modify(session, |doc| {
                let mut h = json!({"users": users, "spaces": res});
                if let Some(r) = &reason {
                    h["reason"] = json!(r);
                }
                object(doc, "legalHolds").insert(name.clone(), h);
                Ok(())
            })
            .await?
        }
        AdminCommand::Federation { command: FederationCommand::List } => {
            let doc = current(session).await?;
            let peers = doc.get("federation").cloned().unwrap_or_else(|| json!({}));
            out.print(
                || {
                    let Some(m) = peers.as_object().filter(|m| !m.is_empty()) else {
                        return "no federation".to_string();
                    };
                    m.iter()
                        .map(|(d, p)| {
                            let url = p["url"].as_str().map_or_else(|| format!("https://{d}"), str::to_string);
                            format!(
                                "{d}\t{}\t{}\t{url}",
                                p["orgDomain"].as_str().unwrap_or(""),
                                p["state"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                peers.clone(),
            );
            return Ok(());
        }
        AdminCommand::Federation { command: FederationCommand::Allow { kms_domain, org, trust, url } } => {
            let pem = std::fs::read_to_string(&trust).with_context(|| format!("reading {}", trust.display()))?;
            let d = kms_domain.to_ascii_lowercase();
            modify(session, |doc| {
                let mut p = json!({"orgDomain": org, "trust": pem, "state": "allowed"});
                if let Some(u) = &url {
                    p["url"] = json!(u);
                }
                object(doc, "federation").insert(d.clone(), p);
                Ok(())
            })
            .await?
        }
        AdminCommand::Federation { command: FederationCommand::End { kms_domain } } => {
            let d = kms_domain.to_ascii_lowercase();
            modify(session, |doc| {
                let Some(p) = object(doc, "federation").get_mut(&d) else {
                    bail!("this org does not federate with {d}");
                };
                p["state"] = json!("ended");
                Ok(())
            })
            .await?
        }
        AdminCommand::Federation { command: FederationCommand::Remove { kms_domain } } => {
            let d = kms_domain.to_ascii_lowercase();
            modify(session, |doc| {
                if object(doc, "federation").remove(&d).is_none() {
                    bail!("this org does not federate with {d}");
                }
                Ok(())
            })
            .await?
        }
        AdminCommand::Hold { command: HoldCommand::Remove { name } } => {
            modify(session, |doc| {
                if object(doc, "legalHolds").remove(&name).is_none() {
                    bail!("there is no legal hold named {name}");
                }
                Ok(())
            })
            .await?
        }
    };
    let p = resp.version;
    let changes = resp.changes.clone().unwrap_or_else(|| "nothing changed".into());
    out.print(|| format!("policy version {p}: {changes}"), json!({"version": p, "changes": changes}));
    Ok(())
}

/// A service change's answer (`None` for `list`, which changes nothing).
async fn service(session: &Session, cmd: ServiceCommand, out: Out) -> anyhow::Result<Option<PolicyChange>> {
    let r = match cmd {
        ServiceCommand::List => {
            let doc = current(session).await?;
            let services = doc.get("services").cloned().unwrap_or(json!({}));
            out.print(
                || {
                    let Some(m) = services.as_object() else { return String::new() };
                    if m.is_empty() {
                        return "no services registered".into();
                    }
                    m.iter()
                        .map(|(id, s)| {
                            format!(
                                "{id}\t{}\t{}\tspaces: {}\troles: {}",
                                s["kind"].as_str().unwrap_or("other"),
                                s["state"].as_str().unwrap_or("?"),
                                s.get("spaces").map(|v| v.to_string()).unwrap_or_else(|| "\"all\"".into()),
                                s.get("roles").map(|v| v.to_string()).unwrap_or_default(),
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
                services.clone(),
            );
            return Ok(None);
        }
        ServiceCommand::Allow { id, kind, spaces, roles, content_from, content_until } => {
            check_date("content-from", &content_from)?;
            check_date("content-until", &content_until)?;
            let id = qualify(session, &id);
            let mut res = Vec::new();
            for s in &spaces {
                res.push(resource(session, s).await?);
            }
            modify(session, |doc| {
                let services = object(doc, "services");
                let mut s = json!({"kind": kind, "state": "allowed", "roles": roles});
                s["spaces"] = if res.is_empty() { json!("all") } else { json!(res) };
                if let Some(f) = &content_from {
                    s["contentFrom"] = json!(f);
                }
                if let Some(u) = &content_until {
                    s["contentUntil"] = json!(u);
                }
                // Keep earlier denials and the revocation time (re-keying relies on it).
                if let Some(old) = services.get(&id) {
                    for k in ["denials", "revokedAt"] {
                        if let Some(v) = old.get(k) {
                            s[k] = v.clone();
                        }
                    }
                }
                services.insert(id.clone(), s);
                Ok(())
            })
            .await
        }
        ServiceCommand::Revoke { id } => {
            let id = qualify(session, &id);
            modify(session, |doc| {
                let Some(s) = object(doc, "services").get_mut(&id) else {
                    bail!("{id} is not a registered service (`custos kms admin service list`)")
                };
                s["state"] = json!("revoked");
                Ok(())
            })
            .await
        }
        ServiceCommand::Deny { id, space, from, until } => {
            check_date("from", &from)?;
            check_date("until", &until)?;
            if space.is_none() && from.is_none() && until.is_none() {
                bail!("give --space, --from/--until or both (to withdraw everything, use `service revoke`)");
            }
            let id = qualify(session, &id);
            let space = match &space {
                Some(s) => Some(resource(session, s).await?),
                None => None,
            };
            modify(session, |doc| {
                let Some(s) = object(doc, "services").get_mut(&id) else { bail!("{id} is not a registered service") };
                let mut d = json!({});
                if let Some(sp) = &space {
                    d["space"] = json!(sp);
                }
                if let Some(f) = &from {
                    d["from"] = json!(f);
                }
                if let Some(u) = &until {
                    d["until"] = json!(u);
                }
                if !s.get("denials").is_some_and(Value::is_array) {
                    s["denials"] = json!([]);
                }
                s["denials"].as_array_mut().expect("an array").push(d);
                Ok(())
            })
            .await
        }
        ServiceCommand::Remove { id } => {
            let id = qualify(session, &id);
            modify(session, |doc| {
                if object(doc, "services").remove(&id).is_none() {
                    bail!("{id} is not a registered service");
                }
                Ok(())
            })
            .await
        }
    };
    r.map(Some)
}
