//! `custos bot poll`: the example bot (crate `bots`, module `poll`) as a
//! service identity of an org, in socket mode or behind a webhook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;

use crate::profile::OrgProfile;

/// Bots.
#[derive(Subcommand)]
pub enum BotCommand {
    /// Run the poll bot: `/poll question | a | b`, `/vote N`, `/results`.
    /// Its client secret comes from the environment (`--secret-env`).
    Poll {
        /// The org profile (as `custos up` writes it).
        #[arg(long)]
        org: PathBuf,
        /// The bot's OAuth client id at the org's identity provider.
        #[arg(long, default_value = "pollbot")]
        client_id: String,
        /// The environment variable holding its client secret.
        #[arg(long, default_value = "CUSTOS_BOT_SECRET")]
        secret_env: String,
        /// Receive events by webhook on this address instead of a socket.
        #[arg(long)]
        webhook_listen: Option<SocketAddr>,
        /// The URL the core should POST to (default: http://<webhook-listen>/).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Run the org's DLP service: scans new messages of the spaces it is in
    /// for card numbers (Luhn-checked) and the org's patterns, hides them
    /// where the core lists it as an org-level moderator, and reports each
    /// finding (masked) to a compliance space.
    Dlp {
        /// The org profile.
        #[arg(long)]
        org: PathBuf,
        /// Its OAuth client id.
        #[arg(long, default_value = "dlp")]
        client_id: String,
        /// The environment variable holding its client secret.
        #[arg(long, default_value = "CUSTOS_BOT_SECRET")]
        secret_env: String,
        /// The space findings are reported to (the org's compliance officers are its members).
        #[arg(long)]
        report_space: String,
        /// An org pattern, `name=regex` (repeatable).
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Do not look for card numbers.
        #[arg(long)]
        no_cards: bool,
    },
    /// Run the org's preview service: a thumbnail of each uploaded image, or
    /// the beginning of each text file, sealed under the space's key and
    /// stored beside the file (the core must list it in `preview_services`).
    Preview {
        /// The org profile.
        #[arg(long)]
        org: PathBuf,
        /// Its OAuth client id.
        #[arg(long, default_value = "previewer")]
        client_id: String,
        /// The environment variable holding its client secret.
        #[arg(long, default_value = "CUSTOS_BOT_SECRET")]
        secret_env: String,
    },
    /// Run the org's search indexing service: for every space it is a
    /// member of, (re-)indexes the history under the space's newest key when
    /// it first sees the space and after every key rotation (the core must
    /// list it in the org's `search_indexers`; the KMS policy, as a `search`
    /// service).
    Indexer {
        /// The org profile.
        #[arg(long)]
        org: PathBuf,
        /// Its OAuth client id.
        #[arg(long, default_value = "indexer")]
        client_id: String,
        /// The environment variable holding its client secret.
        #[arg(long, default_value = "CUSTOS_BOT_SECRET")]
        secret_env: String,
        /// Seconds between looks at its spaces.
        #[arg(long, default_value_t = 30)]
        every: u64,
    },
}

/// A service identity's session from an org profile and its client credentials.
async fn service_session(org: &std::path::Path, client_id: &str, secret_env: &str) -> anyhow::Result<client::Session> {
    let secret = zeroize::Zeroizing::new(
        std::env::var(secret_env).with_context(|| format!("no client secret: set {secret_env}"))?,
    );
    let prof = OrgProfile::load(org)?;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
    let d = crate::session::discover(&http, &prof.issuer).await?;
    let tokens: Arc<dyn client::tokens::TokenSource> =
        Arc::new(client::tokens::OidcTokens::from_client_credentials(&d.token_endpoint, client_id, &secret));
    client::Session::open(prof.session_config(&format!("bot-{client_id}"))?, tokens)
        .await
        .context("opening the service's session (is it allowed by the org's KMS policy?)")
}

/// The indexer's loop: re-index a space when its newest key is not the one it last indexed under.
async fn indexer(session: client::Session, every: std::time::Duration) -> anyhow::Result<()> {
    let mut done: std::collections::HashMap<client::SpaceId, String> = std::collections::HashMap::new();
    loop {
        for space in session.spaces().await?.into_iter().map(|s| s.id) {
            let newest = match session.space(&space).await {
                Ok(s) => match session.kms().newest_key(&s.resource).await {
                    Ok(k) => k.uri.to_string(),
                    Err(e) => {
                        eprintln!(
                            "{}",
                            serde_json::json!({"space": space, "warning": format!("the newest key is out of reach: {e}")})
                        );
                        continue;
                    }
                },
                Err(e) => {
                    eprintln!(
                        "{}",
                        serde_json::json!({"space": space, "warning": format!("the space could not be read: {e}")})
                    );
                    continue;
                }
            };
            if done.get(&space) == Some(&newest) {
                continue;
            }
            match session.reindex(&space).await {
                Ok(n) => {
                    eprintln!("{}", serde_json::json!({"reindexed": space, "messages": n, "key": newest}));
                    done.insert(space, newest);
                }
                Err(e) => eprintln!(
                    "{}",
                    serde_json::json!({"space": space, "warning": format!("re-indexing failed, retrying later: {e}")})
                ),
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs a bot until interrupted.
pub fn run(cmd: BotCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let (org, client_id, secret_env, webhook_listen, webhook_url) = match cmd {
            BotCommand::Poll { org, client_id, secret_env, webhook_listen, webhook_url } => {
                (org, client_id, secret_env, webhook_listen, webhook_url)
            }
            BotCommand::Dlp { org, client_id, secret_env, report_space, patterns, no_cards } => {
                let rules = bots::dlp::Rules::new(!no_cards, &patterns).map_err(anyhow::Error::msg)?;
                let session = service_session(&org, &client_id, &secret_env).await?;
                let user = session.user_id().to_string();
                let bot = Arc::new(bots::dlp::dlp_bot(bots::Bot::new(session), rules, report_space));
                eprintln!("{}", serde_json::json!({"bot": user, "mode": "dlp"}));
                return tokio::select! {
                    r = bot.run_socket_mode() => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                };
            }
            BotCommand::Preview { org, client_id, secret_env } => {
                let session = service_session(&org, &client_id, &secret_env).await?;
                let user = session.user_id().to_string();
                let bot = Arc::new(bots::preview::preview_bot(bots::Bot::new(session)));
                eprintln!("{}", serde_json::json!({"bot": user, "mode": "preview"}));
                return tokio::select! {
                    r = bot.run_socket_mode() => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                };
            }
            BotCommand::Indexer { org, client_id, secret_env, every } => {
                let session = service_session(&org, &client_id, &secret_env).await?;
                eprintln!("{}", serde_json::json!({"bot": session.user_id(), "mode": "indexer"}));
                return tokio::select! {
                    r = indexer(session, std::time::Duration::from_secs(every.max(1))) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                };
            }
        };
        let session = service_session(&org, &client_id, &secret_env).await?;
        let user = session.user_id().to_string();
        let bot = Arc::new(bots::poll::poll_bot(bots::Bot::new(session)));
        match webhook_listen {
            None => {
                eprintln!("{{\"bot\":\"{user}\",\"mode\":\"socket\"}}");
                tokio::select! {
                    r = bot.clone().run_socket_mode() => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
                let local = listener.local_addr()?;
                let url = webhook_url.unwrap_or_else(|| format!("http://{local}/"));
                let secret = bot.register_webhook(&url).await.context("registering the webhook")?;
                let app = bot.clone().webhook_router(secret);
                eprintln!("{{\"bot\":\"{user}\",\"mode\":\"webhook\",\"url\":\"{url}\"}}");
                tokio::select! {
                    r = axum::serve(listener, app) => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
        }
    })
}
