//! Connect-out: a KMS behind a firewall dials the core (`ws://…/kms/connect`)
//! and serves its users' KMS messages over that link. The KMS proves its
//! identity by signing, in the `kms-connect` context, a structure it builds
//! with the core's challenge inside. Reconnects with backoff, forever.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use crate::engine::Engine;

/// Link frames (the core's `custos_core::relay::LinkFrame`, mirrored: the KMS does not depend on the core).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Frame {
    Challenge { challenge: String },
    Hello { kms: String, proof: String },
    Request { id: u64, content_type: String, body: String },
    Response { id: u64, status: u16, content_type: String, body: String },
    Error { message: String },
}

#[derive(Deserialize, Serialize)]
struct Batch {
    #[serde(rename = "kmsMessages")]
    kms_messages: Vec<String>,
}

/// Source name for rate limits: everything relayed by one core shares it.
fn source(url: &str) -> String {
    format!("link:{url}")
}

/// Keeps a link to the core at `url` open for as long as the process runs.
pub async fn run(engine: Arc<Engine>, url: String) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match link_once(&engine, &url).await {
            Ok(()) => {
                tracing::info!(core = %url, "link to the core closed; reconnecting");
                backoff = Duration::from_millis(250);
            }
            Err(e) => tracing::warn!(core = %url, error = %e, "link to the core failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn link_once(engine: &Arc<Engine>, url: &str) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.context("connecting")?;
    let (mut tx, mut rx) = ws.split();
    let challenge = match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<Frame>(&t) {
            Ok(Frame::Challenge { challenge }) => challenge,
            _ => bail!("the core did not send a challenge"),
        },
        _ => bail!("the core did not send a challenge"),
    };
    let proof = kms_protocol::connect::sign_connect(engine.server_key(), &challenge, crate::now_ms() / 1000)?;
    let hello = Frame::Hello { kms: format!("kms://{}", engine.config().kms_domain), proof };
    tx.send(Message::Text(serde_json::to_string(&hello)?.into())).await?;
    tracing::info!(core = %url, "linked to the core");
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
    });
    let src = source(url);
    while let Some(msg) = rx.next().await {
        let Message::Text(t) = msg? else { continue };
        match serde_json::from_str::<Frame>(&t) {
            Ok(Frame::Request { id, content_type, body }) => {
                let (engine, out, src) = (engine.clone(), out_tx.clone(), src.clone());
                tokio::spawn(async move {
                    let resp = answer(&engine, id, &content_type, &body, &src).await;
                    let _ = out.send(serde_json::to_string(&resp).expect("serializes")).await;
                });
            }
            Ok(Frame::Error { message }) => bail!("the core refused the link: {message}"),
            _ => {}
        }
    }
    writer.abort();
    Ok(())
}

async fn answer(engine: &Engine, id: u64, content_type: &str, body: &str, src: &str) -> Frame {
    let reply = |status: u16, content_type: &str, body: String| Frame::Response {
        id,
        status,
        content_type: content_type.into(),
        body,
    };
    if content_type.starts_with("application/json") {
        let Ok(batch) = serde_json::from_str::<Batch>(body) else {
            return reply(400, "application/json", r#"{"error":"bad batch"}"#.into());
        };
        if batch.kms_messages.len() > crate::http::MAX_BATCH {
            return reply(413, "application/json", r#"{"error":"too many messages in one batch"}"#.into());
        }
        let mut out = Vec::with_capacity(batch.kms_messages.len());
        for m in &batch.kms_messages {
            if let Ok(a) = engine.handle(m, Some(src)).await {
                out.push(a);
            }
        }
        return reply(
            200,
            "application/json",
            serde_json::to_string(&Batch { kms_messages: out }).expect("serializes"),
        );
    }
    match engine.handle(body.trim(), Some(src)).await {
        Ok(a) => reply(200, "application/jose", a),
        Err(_) => reply(429, "application/json", r#"{"error":"too many requests"}"#.into()),
    }
}
