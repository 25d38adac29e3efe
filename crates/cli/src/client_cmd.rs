//! The client commands: `login`, `whoami`, `spaces`, `space …`, `send`,
//! `read`, `tail`, `upload`, `download`. Human output by default, one JSON
//! document (or JSON lines for streams) with `--json`.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use client::{EventId, FileId, Role, Session, SpaceId, UserId};
use serde_json::{json, Value};

use crate::output::message::{message_json, message_line};
use crate::output::text::{safe, sanitize};
use crate::output::Out;
use crate::profile::{self, Credentials, OrgProfile};
use crate::session::{discover, open, Discovery};

/// Client commands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Log in: OAuth 2.0 device authorization grant (any OpenID issuer), or
    /// the development issuer's password login with --user.
    Login {
        /// The org profile to use (from your org; `custos up` writes them). Default: the current one.
        #[arg(long)]
        org: Option<PathBuf>,
        /// Password login as this user (development issuer).
        #[arg(long)]
        user: Option<String>,
        /// Read the password from standard input (else $CUSTOS_PASSWORD, else a prompt).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Who you are logged in as, and where.
    Whoami,
    /// Your spaces.
    Spaces,
    /// Create spaces and manage members.
    Space {
        #[command(subcommand)]
        command: SpaceCommand,
    },
    /// Send a message ("-" reads it from standard input).
    Send {
        /// Space id.
        space: String,
        /// The text.
        text: String,
        /// Reply in the thread of this message id.
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Read a space's history, decrypted.
    Read {
        /// Space id.
        space: String,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Follow new events live, decrypted (all your spaces, or one).
    Tail {
        /// Only this space.
        space: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Search your spaces (or one): words and a word being typed ("launch pl").
    /// The core sees only blinded tokens; results are decrypted and ranked here.
    Search {
        /// The query.
        query: String,
        /// Only this space.
        #[arg(long)]
        space: Option<String>,
        /// At most this many results (per space).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a file's preview: an excerpt is printed, a thumbnail written to `--out`.
    Preview {
        /// File id.
        file: String,
        /// Where to write a thumbnail (PNG).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Upload a file (encrypted on this machine, streamed).
    Upload {
        /// Space id.
        space: String,
        /// The file.
        path: PathBuf,
    },
    /// Download and decrypt a file.
    Download {
        /// File id.
        file: String,
        /// Where to write it (a directory: under the file's own name, made safe).
        dest: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `custos space …`.
#[derive(Subcommand)]
pub enum SpaceCommand {
    /// Create a space.
    Create {
        /// The title (encrypted).
        title: String,
        /// Members to add (user ids, `name@org`).
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Add a member.
    Add {
        /// Space id.
        space: String,
        /// User id.
        user: String,
        /// As moderator.
        #[arg(long)]
        moderator: bool,
    },
    /// Remove a member (the space's key rotates).
    Remove {
        /// Space id.
        space: String,
        /// User id.
        user: String,
    },
    /// Show a space and its members.
    Show {
        /// Space id.
        space: String,
    },
    /// Who other than members reading for themselves (services, compliance,
    /// other KMSes, anonymous links, admins, people through another resource
    /// or authorized without being listed) received this space's keys, from
    /// the KMS's audit log.
    Accesses {
        /// Space id.
        space: String,
    },
    /// Whether, and how, the KMS lets a user read this space's keys (the
    /// KMS's authorization rule, applied now).
    Explain {
        /// Space id.
        space: String,
        /// User (or service) id.
        user: String,
    },
}

/// Runs a client command.
pub fn run(cmd: ClientCommand, dir: Option<&Path>, out: Out) -> anyhow::Result<()> {
    let dir = profile::config_dir(dir)?;
    // One thread is plenty for one person's commands, and keeps the
    // allocator to one arena (flat memory for large files).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        match cmd {
            ClientCommand::Login { org, user, password_stdin } => {
                login(&dir, org.as_deref(), user, password_stdin, out).await
            }
            other => {
                let session = open(&dir).await?;
                command(&session, other, out).await
            }
        }
    })
}

async fn token_request(
    http: &reqwest::Client,
    endpoint: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Result<Value, (String, String)>> {
    let r = http.post(endpoint).form(form).send().await.context("the identity provider is unreachable")?;
    let ok = r.status().is_success();
    let v: Value = r.json().await.context("the identity provider's answer is not JSON")?;
    if ok {
        Ok(Ok(v))
    } else {
        Ok(Err((
            v["error"].as_str().unwrap_or("error").to_string(),
            v["error_description"].as_str().unwrap_or("").to_string(),
        )))
    }
}

async fn login(
    dir: &Path,
    org: Option<&Path>,
    user: Option<String>,
    password_stdin: bool,
    out: Out,
) -> anyhow::Result<()> {
    let prof = match org {
        Some(p) => OrgProfile::load(p)?,
        None => OrgProfile::current(dir).context("pass --org <org profile>")?,
    };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let d = discover(&http, &prof.issuer).await?;
    let answer = match user {
        Some(user) => {
            let password = zeroize::Zeroizing::new(if password_stdin {
                let mut s = zeroize::Zeroizing::new(String::new());
                std::io::stdin().read_to_string(&mut s)?;
                s.trim_end_matches(['\r', '\n']).to_string()
            } else if let Ok(p) = std::env::var("CUSTOS_PASSWORD") {
                p
            } else if std::io::stdin().is_terminal() {
                rpassword::prompt_password(format!("Password for {user}: "))?
            } else {
                bail!("no password: use --password-stdin or set CUSTOS_PASSWORD");
            });
            let form = [
                ("grant_type", "password"),
                ("username", user.as_str()),
                ("password", password.as_str()),
                ("client_id", prof.client_id.as_str()),
                ("audience", prof.core_audience.as_str()),
                ("scope", "openid offline_access"),
            ];
            match token_request(&http, &d.token_endpoint, &form).await? {
                Ok(v) => v,
                Err((e, why)) => bail!("login refused: {e} {why}"),
            }
        }
        None => device_flow(&http, &d, &prof, out).await?,
    };
    let refresh = answer["refresh_token"].as_str().context("the identity provider gave no refresh token")?;
    let device_id =
        Credentials::load(dir).map(|c| c.device_id).unwrap_or_else(|_| format!("custos-cli-{}", uuid::Uuid::new_v4()));
    // Who the token says we are (the core and the KMS must agree); only then
    // is anything written, so a failed login leaves the previous one intact.
    let tokens: Arc<dyn client::tokens::TokenSource> =
        Arc::new(client::tokens::OidcTokens::from_refresh_token(&d.token_endpoint, &prof.client_id, refresh, None));
    let session = Session::open(prof.session_config(&device_id)?, tokens).await?;
    prof.save(dir)?;
    Credentials {
        user: session.user_id().to_string(),
        refresh_token: refresh.to_string(),
        device_id,
        issuer: prof.issuer.clone(),
    }
    .save(dir)?;
    out.print(
        || format!("Logged in as {} (org {}, core {})", session.user_id(), prof.org, prof.core_url),
        json!({"user": session.user_id(), "org": prof.org, "core": prof.core_url}),
    );
    Ok(())
}

async fn device_flow(http: &reqwest::Client, d: &Discovery, prof: &OrgProfile, out: Out) -> anyhow::Result<Value> {
    let endpoint = d
        .device_authorization_endpoint
        .as_deref()
        .context("this identity provider offers no device login: use --user")?;
    let r = http
        .post(endpoint)
        .form(&[
            ("client_id", prof.client_id.as_str()),
            ("audience", prof.core_audience.as_str()),
            ("scope", "openid offline_access"),
        ])
        .send()
        .await
        .context("the identity provider is unreachable")?;
    if !r.status().is_success() {
        bail!("the identity provider refused the device login ({})", r.status());
    }
    let v: Value = r.json().await?;
    let device_code = v["device_code"].as_str().context("no device_code")?.to_string();
    let user_code = v["user_code"].as_str().unwrap_or("");
    let uri = v["verification_uri_complete"].as_str().or(v["verification_uri"].as_str()).unwrap_or("");
    let mut interval = v["interval"].as_u64().unwrap_or(5).clamp(1, 60);
    let expires = v["expires_in"].as_u64().unwrap_or(600).min(3600);
    if out.json {
        eprintln!("{}", json!({"verification_uri": uri, "user_code": user_code}));
    } else {
        eprintln!("To log in, open {uri}\nand confirm the code {user_code}.");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(expires);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", prof.client_id.as_str()),
            ("audience", prof.core_audience.as_str()),
        ];
        match token_request(http, &d.token_endpoint, &form).await? {
            Ok(v) => return Ok(v),
            Err((e, _)) if e == "authorization_pending" => {}
            Err((e, _)) if e == "slow_down" => interval += 5,
            Err((e, why)) => bail!("login refused: {e} {why}"),
        }
    }
    bail!("the login code expired before it was confirmed")
}

fn progress_bar(total: u64, out: Out, what: &str) -> Arc<dyn Fn(u64, u64) + Send + Sync> {
    if out.json {
        let what = what.to_string();
        return Arc::new(move |done, total| eprintln!("{}", json!({"progress": what, "done": done, "total": total})));
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    Arc::new(move |done, _| {
        bar.set_position(done);
        if done >= bar.length().unwrap_or(0) {
            bar.finish();
        }
    })
}

async fn command(s: &Session, cmd: ClientCommand, out: Out) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Login { .. } => unreachable!("handled before"),
        ClientCommand::Whoami => {
            out.print(
                || format!("{} (core {}, KMS {})", s.user_id(), s.core_url(), s.kms().domain()),
                json!({"user": s.user_id(), "core": s.core_url(), "kms": s.kms().domain(), "org": s.org()}),
            );
        }
        ClientCommand::Spaces => {
            let spaces = s.spaces().await?;
            if out.json {
                let list: Vec<Value> = spaces
                    .iter()
                    .map(|s| match &s.title {
                        Ok(t) => {
                            json!({"id": s.id, "title": t, "role": s.role, "last_seq": s.last_seq, "read_seq": s.read_seq})
                        }
                        Err(e) => {
                            json!({"id": s.id, "error": e.to_string(), "role": s.role, "last_seq": s.last_seq, "read_seq": s.read_seq})
                        }
                    })
                    .collect();
                println!("{}", json!({"spaces": list}));
            } else if spaces.is_empty() {
                println!("No spaces yet: `custos space create <title> --member <user>`.");
            } else {
                for sp in &spaces {
                    let title = match &sp.title {
                        Ok(t) => t.clone(),
                        Err(e) => format!("[cannot read title: {e}]"),
                    };
                    println!("{}  {}  ({}, {} unread)", safe(&sp.id), safe(&title), sp.role, sp.unread());
                }
            }
        }
        ClientCommand::Space { command } => match command {
            SpaceCommand::Create { title, members } => {
                let members: Vec<UserId> = members.into_iter().map(UserId::from).collect();
                let sp = s.create_space(&title, &members).await?;
                out.print(|| format!("Created space {} ({:?}) with {} member(s)", sp.id, sp.title, sp.members.len()), json!({"id": sp.id, "title": sp.title, "resource": sp.resource.to_string(), "members": sp.members.iter().map(|m| &m.user).collect::<Vec<_>>()}));
            }
            SpaceCommand::Add { space, user, moderator } => {
                let role = if moderator { Role::Moderator } else { Role::Member };
                s.add_member(&SpaceId::from(&space), &UserId::from(&user), role).await?;
                out.print(|| format!("Added {user} to {space}"), json!({"space": space, "added": user}));
            }
            SpaceCommand::Remove { space, user } => {
                s.remove_member(&SpaceId::from(&space), &UserId::from(&user)).await?;
                out.print(
                    || format!("Removed {user} from {space}; the space's key rotated"),
                    json!({"space": space, "removed": user}),
                );
            }
            SpaceCommand::Accesses { space } => {
                let list = s.key_accesses(&SpaceId::from(&space)).await?;
                if out.json {
                    println!(
                        "{}",
                        json!({"space": space, "accesses": list.iter().map(|a| json!({"seq": a.seq, "time": a.time, "actor": a.actor, "actor_kind": a.actor_kind, "via": a.via, "on_behalf_of": a.on_behalf_of, "case": a.case, "action": a.action, "keys": a.key_uris})).collect::<Vec<_>>()})
                    );
                } else if list.is_empty() {
                    println!("Nobody but members reading for themselves has received this space's keys.");
                } else {
                    for a in &list {
                        let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(a.time) * 1_000_000)
                            .ok()
                            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                            .unwrap_or_default();
                        let case = a.case.as_deref().map(|c| format!(" case {}", safe(c))).unwrap_or_default();
                        let via = a.via.as_deref().map(|v| format!(" via {}", safe(v))).unwrap_or_default();
                        println!(
                            "{when}  {} ({}){case}{via}: {} of {} key(s)",
                            safe(&a.actor),
                            a.actor_kind,
                            a.action,
                            a.key_uris.len()
                        );
                    }
                }
            }
            SpaceCommand::Explain { space, user } => {
                let a = s.explain_access(&SpaceId::from(&space), &user).await?;
                out.print(
                    || match (a.authorized, a.via.as_deref(), a.reason.as_deref()) {
                        (true, via, note) => format!(
                            "{} may read this space's keys ({}){}",
                            safe(&a.auth_id),
                            safe(via.unwrap_or("how: not said")),
                            note.map(|n| format!("; {}", safe(n))).unwrap_or_default()
                        ),
                        (false, _, why) => format!(
                            "{} may not read this space's keys: {}",
                            safe(&a.auth_id),
                            safe(why.unwrap_or("not authorized"))
                        ),
                    },
                    json!({"space": space, "auth_id": a.auth_id, "authorized": a.authorized, "via": a.via, "reason": a.reason}),
                );
            }
            SpaceCommand::Show { space } => {
                let sp = s.space(&SpaceId::from(&space)).await?;
                out.print(
                    || {
                        let members: Vec<String> = sp.members.iter().map(|m| format!("{} ({})", m.user, m.role)).collect();
                        format!("{} {:?}\nresource {}\nmembers: {}", sp.id, sp.title, sp.resource, safe(&members.join(", ")))
                    },
                    json!({"id": sp.id, "title": sp.title, "resource": sp.resource.to_string(), "role": sp.role, "members": sp.members.iter().map(|m| json!({"user": m.user, "role": m.role})).collect::<Vec<_>>(), "last_seq": sp.last_seq}),
                );
            }
        },
        ClientCommand::Send { space, text, reply_to } => {
            let text = if text == "-" {
                let mut t = String::new();
                std::io::stdin().read_to_string(&mut t)?;
                t
            } else {
                text
            };
            let id = SpaceId::from(&space);
            let m = match reply_to {
                Some(p) => s.reply(&id, &EventId::from(p), &text).await?,
                None => s.send(&id, &text).await?,
            };
            out.print(|| format!("Sent #{} ({})", m.seq, m.id), json!({"space": space, "seq": m.seq, "id": m.id}));
        }
        ClientCommand::Preview { file, out: dest } => match s.preview(&FileId::from(&file)).await? {
            client::Preview::Excerpt(t) => {
                out.print(|| t.clone(), json!({"file": file, "kind": "excerpt", "text": t}));
            }
            client::Preview::Image { media_type, bytes } => {
                let Some(dest) = dest else {
                    anyhow::bail!("this preview is an image ({media_type}, {} bytes): give --out FILE", bytes.len())
                };
                // A decrypted thumbnail: private like a download. `--out` replaces a
                // file already there, as it always did, but atomically.
                secretfile::replace(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
                out.print(
                    || format!("thumbnail ({media_type}, {} bytes) written to {}", bytes.len(), dest.display()),
                    json!({"file": file, "kind": "image", "media_type": media_type, "bytes": bytes.len(), "out": dest}),
                );
            }
        },
        ClientCommand::Search { query, space, limit } => {
            let spaces = match space {
                Some(sp) => vec![SpaceId::from(sp)],
                None => s.spaces().await?.into_iter().map(|sp| sp.id).collect(),
            };
            let mut hits = Vec::new();
            for sp in &spaces {
                hits.extend(s.search(sp, &query, limit).await?);
            }
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(limit as usize);
            if out.json {
                let v: Vec<Value> = hits
                    .iter()
                    .map(|h| {
                        let mut m = message_json(&h.message);
                        m["score"] = json!(h.score);
                        m
                    })
                    .collect();
                println!("{}", json!({"results": v}));
            } else if hits.is_empty() {
                println!("no results");
            } else {
                for h in &hits {
                    println!("{}", message_line(&h.message));
                }
            }
        }
        ClientCommand::Read { space, limit } => {
            let space = SpaceId::from(space);
            let msgs = s.history(&space, None, limit).await?;
            if out.json {
                println!("{}", json!({"events": msgs.iter().map(message_json).collect::<Vec<_>>()}));
            } else {
                for m in &msgs {
                    println!("{}", message_line(m));
                }
            }
            if let Some(last) = msgs.last() {
                s.mark_read(&space, last.seq).await?;
            }
        }
        ClientCommand::Tail { space, count } => {
            let mut since = HashMap::new();
            if let Some(sp) = &space {
                let sp = SpaceId::from(sp);
                let info = s.space(&sp).await?;
                since.insert(sp, info.last_seq);
            }
            let mut live = s.live(since).await?;
            if !out.json {
                eprintln!("Following {} (Ctrl-C to stop)", space.as_deref().unwrap_or("all your spaces"));
            } else {
                eprintln!("{}", json!({"following": space}));
            }
            let mut seen = 0usize;
            loop {
                let m = tokio::select! {
                    m = live.next() => m?,
                    _ = tokio::signal::ctrl_c() => break,
                };
                if space.as_ref().is_some_and(|sp| *sp != m.space_id) {
                    continue;
                }
                if out.json {
                    println!("{}", message_json(&m));
                } else {
                    println!("{}", message_line(&m));
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
        }
        ClientCommand::Upload { space, path } => {
            let size = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
            let bar = progress_bar(filecrypt::ciphertext_len(size, filecrypt::DEFAULT_SEGMENT), out, "upload");
            let f = s.upload(&SpaceId::from(&space), &path, &*bar).await?;
            report_memory();
            out.print(
                || format!("Uploaded {} ({} bytes) as file {}", f.name, f.size, f.id),
                json!({"file": f.id, "name": f.name, "size": f.size, "space": space}),
            );
        }
        ClientCommand::Download { file, dest, force } => {
            let file = FileId::from(file);
            let info = s.file_info(&file).await?;
            let bar = progress_bar(filecrypt::ciphertext_len(info.size, filecrypt::DEFAULT_SEGMENT), out, "download");
            let dest = if dest.is_dir() { dest.join(sanitize(&info.name)) } else { dest };
            let f = s.download_to(&file, &dest, force, &*bar).await?;
            report_memory();
            out.print(
                || format!("Downloaded {} ({} bytes) to {}", f.name, f.size, dest.display()),
                json!({"file": f.id, "name": f.name, "size": f.size, "path": dest}),
            );
        }
    }
    Ok(())
}

/// With `CUSTOS_REPORT_MEMORY` set, prints this process's peak resident
/// memory (the kernel's VmHWM) to stderr as JSON: how the tests check that
/// large files stream in bounded memory. (A parent's `wait4` figure would
/// include the parent's own pages copied at fork.)
fn report_memory() {
    if std::env::var_os("CUSTOS_REPORT_MEMORY").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    eprintln!("{}", json!({"peak_rss_kib": kib}));
}
