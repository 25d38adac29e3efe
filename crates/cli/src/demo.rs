//! `custos demo` / `custos up --demo`: a scripted conversation on the local
//! deployment that shows messages flowing end to end, a raw row of the
//! core's database (ciphertext only), and a removed member failing to read
//! what is sent after the removal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client::{Content, Session};
use sqlx::{Column, Row};

use crate::profile::OrgProfile;
use crate::up::DemoView;

/// Logs `user` in with the development issuer's password grant.
pub async fn password_session(prof: &OrgProfile, user: &str, password: &str) -> anyhow::Result<Session> {
    let http = reqwest::Client::new();
    let token_endpoint = format!("{}/token", prof.issuer.trim_end_matches('/'));
    let r = http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("client_id", prof.client_id.as_str()),
            ("audience", prof.core_audience.as_str()),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "login of {user} refused ({})", r.status());
    let v: serde_json::Value = r.json().await?;
    let refresh = v["refresh_token"].as_str().context("no refresh token")?;
    let tokens =
        Arc::new(client::tokens::OidcTokens::from_refresh_token(&token_endpoint, &prof.client_id, refresh, None));
    let cfg = prof.session_config(&format!("custos-demo-{}", uuid::Uuid::new_v4()))?;
    Ok(Session::open(cfg, tokens).await?)
}

fn say(who: &str, what: impl std::fmt::Display) {
    println!("  {who:>6} | {what}");
}

/// Runs the scripted conversation.
pub async fn run(view: &DemoView) -> anyhow::Result<()> {
    let (acme, people) = view.orgs.first().context("no org")?;
    let pw: HashMap<&str, &str> = people.iter().map(|(u, p)| (u.as_str(), p.as_str())).collect();
    let login = |u: &'static str| {
        let pw = pw.get(u).copied().unwrap_or_default().to_string();
        async move { password_session(acme, u, &pw).await }
    };
    println!("\n== Custos demo ==");
    let alice = login("alice@acme.test").await?;
    let bob = login("bob@acme.test").await?;
    let carol = login("carol@acme.test").await?;
    say("alice", "logged in; creating the space \"Launch plans\" with bob and carol");
    let space = alice.create_space("Launch plans", &["bob@acme.test".into(), "carol@acme.test".into()]).await?;
    say("alice", format!("space {} bound to KMS resource {}", space.id, space.resource));

    let mut live = bob.live(HashMap::from([(space.id.clone(), space.last_seq)])).await?;
    for text in ["Launch is on Thursday.", "Keep the price under wraps until then."] {
        let m = alice.send(&space.id, text).await?;
        say("alice", format!("sent #{}: {text}", m.seq));
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let m = live.next().await?;
                if let Content::Text(t) = &m.content {
                    return Ok::<_, client::Error>((m.seq, t.clone()));
                }
            }
        })
        .await
        .context("bob did not receive the message in time")??;
        say("bob", format!("received #{} live, decrypted: {}", got.0, got.1));
    }
    drop(live);

    println!("\n  What the provider stores (the newest row of core_events, raw):");
    let url = format!("sqlite://{}?mode=ro", view.core_db.display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("opening the core's database")?;
    let row =
        sqlx::query("SELECT * FROM core_events WHERE kind = 'message' ORDER BY create_date DESC, seq DESC LIMIT 1")
            .fetch_one(&pool)
            .await?;
    for (i, col) in row.columns().iter().enumerate() {
        let v: Option<String> = row
            .try_get::<Option<String>, _>(i)
            .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|n| n.map(|n| n.to_string())))
            .unwrap_or(None);
        let v = v.unwrap_or_else(|| "NULL".into());
        let shown = if v.len() > 100 {
            format!("{}… ({} bytes)", v.chars().take(100).collect::<String>(), v.len())
        } else {
            v
        };
        println!("    {:<16} {shown}", col.name());
    }
    pool.close().await;

    say("alice", "removing carol; the space's key rotates");
    alice.remove_member(&space.id, &"carol@acme.test".into()).await?;
    let secret = alice.send(&space.id, "Carol has left: the budget is 2.4M.").await?;
    say("alice", format!("sent #{} under the new key", secret.seq));

    match carol.history(&space.id, None, 10).await {
        Ok(_) => anyhow::bail!("the core let a removed member read the space"),
        Err(e) => say("carol", format!("reading the space: refused by the core ({e})")),
    }
    // Even a core that let her through would not help: the KMS refuses the new key.
    let key_uri = bob
        .stored_events(&space.id, Some(secret.seq - 1), None, Some(1))
        .await?
        .pop()
        .and_then(|e| e.key_uri)
        .context("no key")?;
    match carol.kms().key(&key_uri).await {
        Ok(_) => anyhow::bail!("the KMS gave a removed member the new key"),
        Err(e) => say("carol", format!("asking the KMS for the new key directly: {e}")),
    }
    let last = bob.history(&space.id, None, 1).await?;
    if let Some(Content::Text(t)) = last.first().map(|m| &m.content) {
        say("bob", format!("still reads the space: {t}"));
    }
    println!("== demo done ==\n");
    Ok(())
}
