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
}

/// Runs a bot until interrupted.
pub fn run(cmd: BotCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async move {
        let BotCommand::Poll { org, client_id, secret_env, webhook_listen, webhook_url } = cmd;
        let secret = zeroize::Zeroizing::new(
            std::env::var(&secret_env).with_context(|| format!("no client secret: set {secret_env}"))?,
        );
        let prof = OrgProfile::load(&org)?;
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        let d = crate::client_cmd::discover(&http, &prof.issuer).await?;
        let tokens: Arc<dyn client::tokens::TokenSource> =
            Arc::new(client::tokens::OidcTokens::from_client_credentials(&d.token_endpoint, &client_id, &secret));
        let session = client::Session::open(prof.session_config(&format!("bot-{client_id}"))?, tokens)
            .await
            .context("opening the bot's session (is it allowed by the org's KMS policy?)")?;
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
