//! The logged-in user's SDK session, from the stored org profile and
//! credentials (`custos login` writes them), and the identity provider's
//! discovery document.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use client::Session;

use crate::profile::{self, Credentials, OrgProfile};

#[derive(serde::Deserialize)]
pub(crate) struct Discovery {
    pub(crate) token_endpoint: String,
    #[serde(default)]
    pub(crate) device_authorization_endpoint: Option<String>,
}

pub(crate) async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<Discovery> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let r = http.get(&url).send().await.with_context(|| format!("the identity provider at {issuer} is unreachable"))?;
    if !r.status().is_success() {
        bail!("the identity provider at {issuer} answered {} to discovery", r.status());
    }
    r.json().await.with_context(|| format!("{url} is not an OpenID discovery document"))
}

/// Opens the logged-in session.
pub async fn open(dir: &Path) -> anyhow::Result<Session> {
    let (cfg, tokens) = logged_in(dir).await?;
    Ok(Session::open(cfg, tokens).await?)
}

/// The logged-in configuration and tokens (for SDK objects other than a [`Session`]).
pub(crate) async fn logged_in(
    dir: &Path,
) -> anyhow::Result<(client::SessionConfig, Arc<dyn client::tokens::TokenSource>)> {
    let prof = OrgProfile::current(dir)?;
    let creds = Credentials::load(dir)?;
    // The refresh token goes only to the issuer it came from.
    if creds.issuer != prof.issuer {
        bail!("the stored login is for {}, the profile names {}: run `custos login` again", creds.issuer, prof.issuer);
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let d = discover(&http, &prof.issuer).await?;
    let hook = profile::rotate_hook(dir, &creds.user, &creds.device_id, &creds.issuer);
    let tokens: Arc<dyn client::tokens::TokenSource> = Arc::new(client::tokens::OidcTokens::from_refresh_token(
        &d.token_endpoint,
        &prof.client_id,
        &creds.refresh_token,
        Some(hook),
    ));
    Ok((prof.session_config(&creds.device_id)?, tokens))
}

