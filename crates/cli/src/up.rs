//! `custos up`: an all-in-one local deployment on embedded defaults. Two
//! organizations (`acme.test`, `globex.test`), each with its own development
//! identity provider and KMS, and one core; SQLite and local files under one
//! data directory. The next `up` resumes with the data kept.
//!
//! Ports (from `--base-port`, default 8400): core +0, acme IdP +1, acme KMS
//! +2, globex IdP +3, globex KMS +4.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::profile::OrgProfile;

/// The core's token audience in an `up` deployment.
pub const CORE_AUDIENCE: &str = "https://core.custos.test";

/// One seeded organization.
struct Org {
    domain: &'static str,
    users: &'static [&'static str],
    /// Service identities (client id, kind): the poll bot first.
    bots: &'static [(&'static str, &'static str)],
    /// Users the core lets read (never write) the org's spaces, for compliance.
    compliance_readers: &'static [&'static str],
    idp_port: u16,
    kms_port: u16,
    /// The org's web host (the web client), at `http://<name>.localhost:<port>`.
    web_port: u16,
}

fn orgs(base: u16) -> [Org; 2] {
    [
        Org {
            domain: "acme.test",
            users: &["alice", "bob", "carol"],
            bots: &[("pollbot", "bot"), ("indexer", "search"), ("dlp", "dlp"), ("previewer", "preview")],
            compliance_readers: &["carol"],
            idp_port: base + 1,
            kms_port: base + 2,
            web_port: base + 5,
        },
        Org {
            domain: "globex.test",
            users: &["dave", "erin"],
            bots: &[],
            compliance_readers: &[],
            idp_port: base + 3,
            kms_port: base + 4,
            web_port: base + 6,
        },
    ]
}

/// Secrets generated on the first `up` (development only), kept in
/// `<data>/secrets.toml` with mode 0600.
#[derive(Serialize, Deserialize, Default)]
pub struct Secrets {
    /// CMK passphrase per org.
    cmk: std::collections::BTreeMap<String, String>,
    /// Password per user id.
    passwords: std::collections::BTreeMap<String, String>,
    /// Client secret per bot client id.
    bots: std::collections::BTreeMap<String, String>,
}

fn random_secret(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

fn load_or_create_secrets(data: &Path) -> anyhow::Result<Secrets> {
    let path = data.join("secrets.toml");
    // Twice at most: a first `up` that finds the file made meanwhile by another
    // (AlreadyExists) reads and completes that one instead of its own.
    for _ in 0..2 {
        let (mut s, existed): (Secrets, bool) = match std::fs::read_to_string(&path) {
            Ok(t) => (toml::from_str(&t).with_context(|| format!("{} is damaged", path.display()))?, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Secrets::default(), false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let before = toml::to_string(&s)?;
        for org in orgs(0) {
            s.cmk.entry(org.domain.to_string()).or_insert_with(|| random_secret(32));
            for u in org.users {
                s.passwords.entry(format!("{u}@{}", org.domain)).or_insert_with(|| random_secret(12));
            }
            for (bot, _) in org.bots {
                s.bots.entry(bot.to_string()).or_insert_with(|| random_secret(24));
            }
        }
        let text = toml::to_string(&s)?;
        if text == before {
            return Ok(s);
        }
        let text = format!("# Development secrets of `custos up` (not for production).\n{text}");
        if existed {
            // Replacing is meant: the same secrets, with the ones missing added.
            secretfile::replace(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            return Ok(s);
        }
        // A first write never replaces: the CMK passphrases in it seal the KMSes' CMKs.
        match secretfile::create_new(&path, text.as_bytes()) {
            Ok(()) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
        }
    }
    anyhow::bail!("{} keeps changing: is another `custos up` starting on this directory?", path.display())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The ready deployment, as `--json` prints it.
#[derive(Serialize)]
struct Ready {
    data_dir: PathBuf,
    core_url: String,
    orgs: Vec<ReadyOrg>,
}

#[derive(Serialize)]
struct ReadyOrg {
    domain: String,
    issuer: String,
    kms_url: String,
    /// The org's web client.
    web_url: String,
    profile: PathBuf,
    users: Vec<(String, String)>,
    bots: Vec<(String, String)>,
}

/// Options of `custos up`.
pub struct UpOptions {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// First of seven consecutive ports.
    pub base_port: u16,
    /// Print the ready line as JSON.
    pub json: bool,
    /// Run the scripted demo once everything is up.
    pub demo: bool,
    /// Stop after the demo.
    pub exit_after_demo: bool,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("CUSTOS_UP_DIR") {
        return Ok(PathBuf::from(d));
    }
    Ok(dirs::data_dir().context("no data directory on this system: pass --data-dir")?.join("custos").join("up"))
}

/// Runs `custos up`.
pub fn run(opts: UpOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.base_port <= u16::MAX - 4, "--base-port must leave room for five ports");
    let data = match &opts.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let (data, secrets) = prepare(&data)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(up(opts, data, secrets))
}

fn cmk_env(org: &str) -> String {
    format!("CUSTOS_UP_CMK_{}", org.replace(['.', '-'], "_").to_uppercase())
}

/// A running deployment (in this process).
pub struct Deployment {
    ready: Ready,
    webs: Vec<crate::web_host::Running>,
    idps: Vec<idp::Running>,
    kmses: Vec<kms::server::Running>,
    core: custos_core::server::Running,
}

impl Deployment {
    /// What the demo and the load tool need of it.
    pub fn view(&self) -> DemoView {
        ready_view(&self.ready)
    }

    /// Stops every server.
    pub async fn stop(self) {
        for w in self.webs {
            w.task.abort();
        }
        stop(self.idps, self.kmses, self.core).await
    }
}

/// Creates `data` and its secrets, and puts the CMK passphrases in the
/// environment where the KMSes read them. Call before any runtime starts
/// (the environment is not safe to change while other threads read it).
pub fn prepare(data: &Path) -> anyhow::Result<(PathBuf, Secrets)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    // Databases, keys and secrets: this user's only.
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", data.display()))?;
    let data = data.canonicalize()?;
    let secrets = load_or_create_secrets(&data)?;
    for (org, pass) in &secrets.cmk {
        std::env::set_var(cmk_env(org), pass);
    }
    Ok((data, secrets))
}

async fn up(opts: UpOptions, data: PathBuf, secrets: Secrets) -> anyhow::Result<()> {
    let d = start(data.clone(), opts.base_port, secrets).await?;
    if opts.json {
        println!("{}", json!({"ready": d.ready}));
    } else {
        print_ready(&d.ready);
    }

    if opts.demo {
        let result = crate::demo::run(&d.view()).await;
        if let Err(e) = &result {
            eprintln!("custos demo: {e:#}");
        }
        if opts.exit_after_demo {
            d.stop().await;
            return result;
        }
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    d.stop().await;
    if !opts.json {
        println!("custos up: stopped; data kept in {}", data.display());
    }
    Ok(())
}

/// Starts everything (after [`prepare`]) on five ports from `base`.
pub async fn start(data: PathBuf, base: u16, secrets: Secrets) -> anyhow::Result<Deployment> {
    let core_url = format!("http://127.0.0.1:{base}");
    let mut idps = Vec::new();
    let mut kmses = Vec::new();
    let mut webs = Vec::new();
    let mut ready = Ready { data_dir: data.clone(), core_url: core_url.clone(), orgs: Vec::new() };
    let mut core_cfg = format!(
        "# Written by `custos up`.\nlisten = \"127.0.0.1:{base}\"\ndata_dir = \"core\"\n\n# Bots on loopback may take webhooks over plain HTTP (development only).\n[webhooks]\nallow_http = true\n\n[identity]\naudience = {}\n",
        toml_str(CORE_AUDIENCE)
    );
    let mut core_orgs = String::new();

    let mut kms_engines = Vec::new();
    for org in orgs(base) {
        let dir = data.join(org.domain);
        std::fs::create_dir_all(&dir)?;
        let issuer = format!("http://127.0.0.1:{}", org.idp_port);
        let kms_domain = format!("kms.{}", org.domain);
        let kms_audience = format!("kms://{kms_domain}");
        // Its own host name per org: cookies and storage ignore ports.
        let name = org.domain.split('.').next().unwrap_or(org.domain);
        let web_origin = format!("http://{name}.localhost:{}", org.web_port);

        // The org's development identity provider.
        let mut idp_cfg = format!(
            "# Written by `custos up` (development identity provider).\nlisten = \"127.0.0.1:{}\"\nissuer = {}\ndata_dir = \"idp\"\ndevice_poll_interval_secs = 2\naudiences = [{}, {}]\n",
            org.idp_port,
            toml_str(&issuer),
            toml_str(CORE_AUDIENCE),
            toml_str(&kms_audience)
        );
        let mut users = Vec::new();
        for u in org.users {
            let id = format!("{u}@{}", org.domain);
            let pw = &secrets.passwords[&id];
            write!(idp_cfg, "\n[[users]]\nid = {}\npassword = {}\n", toml_str(&id), toml_str(pw))?;
            users.push((id, pw.clone()));
        }
        let mut bots = Vec::new();
        for (bot, _) in org.bots {
            let secret = &secrets.bots[*bot];
            write!(
                idp_cfg,
                "\n[[clients]]\nclient_id = {}\nclient_secret = {}\nsubject = {}\n",
                toml_str(bot),
                toml_str(secret),
                toml_str(&format!("{bot}@{}", org.domain))
            )?;
            bots.push((bot.to_string(), secret.clone()));
        }
        write!(
            idp_cfg,
            "\n# The org's web client signs users in here (authorization code + PKCE).\n[[web_clients]]\nclient_id = \"custos-web\"\nredirect_uris = [{}]\n",
            toml_str(&format!("{web_origin}/"))
        )?;
        let idp_path = dir.join("idp.toml");
        write_private(&idp_path, &idp_cfg)?;
        let idp = idp::start(idp::Config::load(&idp_path)?)
            .await
            .with_context(|| format!("starting the identity provider of {}", org.domain))?;

        // The org's KMS.
        let admin = format!("{}@{}", org.users[0], org.domain);
        let kms_cfg = format!(
            "# Written by `custos up`.\nlisten = \"127.0.0.1:{}\"\ndomain = {}\norg_domain = {}\ndata_dir = \"kms\"\nadmins = [{}]\n\n[cmk]\npassphrase_env = {}\n\n[identity]\naudience = {}\n\n[[identity.issuers]]\nissuer = {}\norg_domain = {}\n",
            org.kms_port,
            toml_str(&kms_domain),
            toml_str(org.domain),
            toml_str(&admin),
            toml_str(&cmk_env(org.domain)),
            toml_str(&kms_audience),
            toml_str(&issuer),
            toml_str(org.domain)
        );
        let kms_path = dir.join("kms.toml");
        std::fs::write(&kms_path, &kms_cfg)?;
        let kcfg = kms::config::Config::load(&kms_path)?;
        let kms =
            kms::server::start(&kcfg, false).await.with_context(|| format!("starting the KMS of {}", org.domain))?;
        register_bots(&kms.engine, &kms_domain, org.domain, org.bots).await?;
        kms_engines.push((
            kms_domain.clone(),
            org.domain,
            format!("http://127.0.0.1:{}", org.kms_port),
            kms.engine.clone(),
        ));
        let key_jwk = serde_json::to_string(&kms.engine.server_key().public_key().to_jwk())?;
        let pem_path = dir.join("kms-public.pem");
        std::fs::write(&pem_path, kms.engine.server_key().public_key().to_pem())?;

        write!(
            core_cfg,
            "\n[[identity.issuers]]\nissuer = {}\norg_domain = {}\n",
            toml_str(&issuer),
            toml_str(org.domain)
        )?;
        let readers: Vec<String> =
            org.compliance_readers.iter().map(|u| toml_str(&format!("{u}@{}", org.domain))).collect();
        let moderators: Vec<String> = org
            .bots
            .iter()
            .filter(|(_, kind)| *kind == "dlp")
            .map(|(b, _)| toml_str(&format!("{b}@{}", org.domain)))
            .collect();
        let previewers: Vec<String> = org
            .bots
            .iter()
            .filter(|(_, kind)| *kind == "preview")
            .map(|(b, _)| toml_str(&format!("{b}@{}", org.domain)))
            .collect();
        let indexers: Vec<String> = org
            .bots
            .iter()
            .filter(|(_, kind)| *kind == "search")
            .map(|(b, _)| toml_str(&format!("{b}@{}", org.domain)))
            .collect();
        write!(
            core_orgs,
            "\n[[orgs]]\ndomain = {}\nkms_uri = {}\nkms_url = {}\nkms_key = {}\ncompliance_readers = [{}]\nsearch_indexers = [{}]\nmoderators = [{}]\npreview_services = [{}]\nweb_origins = [{}]\n",
            toml_str(org.domain),
            toml_str(&kms_audience),
            toml_str(&format!("http://127.0.0.1:{}", org.kms_port)),
            toml_str(&pem_path.display().to_string()),
            readers.join(", "),
            indexers.join(", "),
            moderators.join(", "),
            previewers.join(", "),
            toml_str(&web_origin)
        )?;

        // What the org hands its users: where to log in, and the KMS key to pin.
        let profile = OrgProfile {
            org: org.domain.to_string(),
            issuer: issuer.clone(),
            client_id: "custos-cli".into(),
            core_url: core_url.clone(),
            core_audience: CORE_AUDIENCE.into(),
            kms_domain: kms_domain.clone(),
            kms_audience: kms_audience.clone(),
            kms_key: key_jwk,
            kms_url: None,
        };
        // The org's web client, served from the org's realm with its settings.
        let app = crate::web_host::AppConfig::from_profile(&profile, "custos-web");
        let listen: std::net::SocketAddr = format!("127.0.0.1:{}", org.web_port).parse()?;
        webs.push(
            crate::web_host::start(listen, &app)
                .await
                .with_context(|| format!("starting the web host of {}", org.domain))?,
        );
        let profile_path = data.join(format!("{}.profile.toml", org.domain));
        std::fs::write(
            &profile_path,
            format!(
                "# Custos org profile for {} (hand this to the org's users)\n{}",
                org.domain,
                toml::to_string(&profile)?
            ),
        )?;
        ready.orgs.push(ReadyOrg {
            domain: org.domain.to_string(),
            issuer,
            kms_url: format!("http://127.0.0.1:{}", org.kms_port),
            web_url: format!("{web_origin}/"),
            profile: profile_path,
            users,
            bots,
        });
        idps.push(idp);
        kmses.push(kms);
    }
    // Cross-organization spaces: each KMS fetches the other's keys for its own users.
    federate(&kms_engines).await.context("federating the organizations' KMSs")?;

    core_cfg.push_str(&core_orgs);
    let core_path = data.join("core.toml");
    std::fs::write(&core_path, &core_cfg)?;
    let core = custos_core::server::start(custos_core::config::Config::load(&core_path)?)
        .await
        .context("starting the core")?;
    Ok(Deployment { ready, webs, idps, kmses, core })
}

async fn stop(idps: Vec<idp::Running>, kmses: Vec<kms::server::Running>, core: custos_core::server::Running) {
    core.task.abort();
    for k in kmses {
        k.task.abort();
    }
    for i in idps {
        i.shutdown().await;
    }
    // Let aborted tasks drop their pools (SQLite checkpoints on close).
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn print_ready(r: &Ready) {
    println!("Custos is up (development deployment; data in {}).", r.data_dir.display());
    println!("  core: {}", r.core_url);
    for o in &r.orgs {
        println!("  {}: identity provider {}, KMS {}", o.domain, o.issuer, o.kms_url);
    }
    println!("\nOpen the web client in a browser (Chromium and Firefox resolve *.localhost to this machine):");
    for o in &r.orgs {
        println!("  {}: {}", o.domain, o.web_url);
    }
    println!("\nLog in (each user in their own config directory, e.g. CUSTOS_CONFIG_DIR=~/.custos-alice):");
    for o in &r.orgs {
        for (u, pw) in &o.users {
            println!("  custos login --org {} --user {u}      # password: {pw}", o.profile.display());
        }
        for (b, secret) in &o.bots {
            println!("  bot {b}@{}: client_credentials at {}, client_id {b}, secret {secret}", o.domain, o.issuer);
            let cmd = match b.as_str() {
                "indexer" => "indexer",
                "dlp" => "dlp --report-space <space>",
                "previewer" => "preview",
                _ => "poll",
            };
            println!(
                "    run it: CUSTOS_BOT_SECRET={secret} custos bot {cmd} --org {}   # then: custos space add <space> {b}@{}",
                o.profile.display(),
                o.domain
            );
        }
    }
    println!(
        "\nThen: custos space create \"Launch\" --member bob@acme.test; custos send <space> \"hello\"; custos tail"
    );
    println!("Ctrl-C stops everything; the next `custos up` resumes with the data kept.");
}

/// What the demo needs of a deployment.
pub struct DemoView {
    /// The core's SQLite file.
    pub core_db: PathBuf,
    /// Org profiles and user passwords, by org domain.
    pub orgs: Vec<(OrgProfile, Vec<(String, String)>)>,
}

fn ready_view(r: &Ready) -> DemoView {
    DemoView {
        core_db: r.data_dir.join("core").join("core.db"),
        orgs: r.orgs.iter().map(|o| (OrgProfile::load(&o.profile).expect("just written"), o.users.clone())).collect(),
    }
}

/// Writes a configuration holding secrets (0600, atomically). Replacing is
/// meant: it is made anew from `secrets.toml` on every `up`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    secretfile::replace(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Federates each org's KMS with the others' (cross-organization spaces),
/// pinning their certificates, unless its policy already names them (an
/// admin's "ended" stays ended).
async fn federate(kmss: &[(String, &str, String, std::sync::Arc<kms::Engine>)]) -> anyhow::Result<()> {
    use kms_protocol::policy::{FederationPeer, PeerState};
    for (domain, org, _, engine) in kmss {
        for _ in 0..5 {
            let loaded = engine.policies().current().await?;
            let mut p = loaded.policy.clone();
            for (peer, peer_org, url, peer_engine) in kmss.iter().filter(|k| &k.0 != domain) {
                let Some(fed) = peer_engine.federation() else { continue };
                p.federation.entry(peer.clone()).or_insert_with(|| FederationPeer {
                    org_domain: peer_org.to_string(),
                    url: Some(url.clone()),
                    trust: fed.certificate_pem(),
                    state: PeerState::Allowed,
                    ended_at: None,
                });
            }
            if p == loaded.policy {
                break;
            }
            let p = p.canonicalize(domain, org)?;
            match engine.policies().update(p, loaded.version as u64, kms::now_ms()).await {
                Ok(_) => break,
                Err(kms::policy::UpdateError::Conflict(_)) => continue,
                Err(kms::policy::UpdateError::Engine(e)) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// On the first `up` (an org policy never set), lists the org's bot as an
/// allowed service: services, token ones included, are denied unless the
/// org's policy lists them. Later changes are the admin's (`custos kms admin`).
async fn register_bots(engine: &kms::Engine, kms_domain: &str, org: &str, bots: &[(&str, &str)]) -> anyhow::Result<()> {
    use kms_protocol::policy::{OrgPolicy, ServicePolicy, ServiceState, SpaceScope, ROLE_PARTICIPANT};
    if bots.is_empty() || engine.policies().current().await?.version != 0 {
        return Ok(());
    }
    let mut p = OrgPolicy::default();
    for (bot, kind) in bots {
        p.services.insert(
            format!("{bot}@{org}"),
            ServicePolicy {
                kind: kind.to_string(),
                state: ServiceState::Allowed,
                spaces: SpaceScope::All,
                roles: vec![ROLE_PARTICIPANT.into()],
                content_from: None,
                content_until: None,
                denials: Vec::new(),
                revoked_at: None,
            },
        );
    }
    let p = p.canonicalize(kms_domain, org)?;
    match engine.policies().update(p, 0, kms::now_ms()).await {
        Ok(_) | Err(kms::policy::UpdateError::Conflict(_)) => Ok(()),
        Err(kms::policy::UpdateError::Engine(e)) => Err(e.into()),
    }
}
