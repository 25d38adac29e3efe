//! The bot SDK: bots as developers know them from Slack (commands, replies,
//! socket mode or signed webhooks), over spaces whose content the provider
//! never sees.
//!
//! A bot is a service identity of its org (OAuth client credentials; the org
//! lists it in its KMS policy, `custos kms admin service allow`). A member
//! adds it to a space like anyone else (`custos space add <space> pollbot@…`:
//! a KMS authorization and a core membership). The SDK ([`client::Session`]
//! underneath) does every piece of cryptography: a handler sees plaintext
//! [`Ctx`]s and answers with [`Ctx::reply`] or [`Ctx::say`].
//!
//! Events arrive either way:
//! - **Socket mode** ([`Bot::run_socket_mode`]): the core's WebSocket, every
//!   space the bot is in, resumed after disconnects.
//! - **Webhooks** ([`Bot::register_webhook`], [`Bot::webhook_router`]): the
//!   core POSTs each event, signed (`X-Custos-Signature: v1=<hex
//!   HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>`); the router
//!   refuses a bad or stale signature (401), answers 200 at once and handles
//!   the event in the background; retries are deduplicated by event id.
//!
//! When the org revokes the bot at its KMS, the bot's next key request is
//! refused: messages reach it as [`client::Content::Unreadable`] (counted in
//! [`Stats::unreadable`]), never as text, and it cannot answer.

pub mod dlp;
pub mod poll;
pub mod preview;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use client::{Content, CoreEvent, FileId, Message, Session, SpaceId, UserId};
use zeroize::Zeroizing;

/// How far a webhook request's timestamp may be from now (replays older than this are refused).
pub const MAX_SKEW_SECS: u64 = 300;
/// Event ids remembered to drop redeliveries.
const SEEN: usize = 10_000;

/// One message for a handler.
#[derive(Clone)]
pub struct Ctx {
    /// The message, decrypted and checked by the SDK.
    pub message: Message,
    /// The text.
    pub text: String,
    /// The command (`poll` for `/poll …`), if the text is one.
    pub command: Option<String>,
    /// What follows the command (or the whole text).
    pub args: String,
    /// For a finished upload ([`Bot::on_file`]): the file id.
    pub file: Option<FileId>,
    session: Arc<Session>,
}

impl Ctx {
    /// The space.
    pub fn space(&self) -> &SpaceId {
        &self.message.space_id
    }

    /// Who sent it (checked against the sealed sender).
    pub fn sender(&self) -> &UserId {
        &self.message.sender
    }

    /// Answers in the message's thread.
    pub async fn reply(&self, text: &str) -> client::Result<Message> {
        let parent = self.message.parent.clone().unwrap_or_else(|| self.message.id.clone());
        self.session.reply(self.space(), &parent, text).await
    }

    /// Says something in the space.
    pub async fn say(&self, text: &str) -> client::Result<Message> {
        self.session.send(self.space(), text).await
    }

    /// Hides the message (deletes it for everyone): the bot must be a
    /// moderator of the space, or an org-level moderator at the core.
    pub async fn hide(&self) -> client::Result<Message> {
        self.session.delete(self.space(), &self.message.id).await
    }

    /// The bot's session (to act elsewhere, e.g. report to another space).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

/// What handles messages or commands.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one message.
    async fn call(&self, ctx: Ctx) -> anyhow::Result<()>;
}

#[async_trait::async_trait]
impl<F, Fut> Handler for F
where
    F: Fn(Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    async fn call(&self, ctx: Ctx) -> anyhow::Result<()> {
        self(ctx).await
    }
}

/// What the bot has seen (for operators and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages handed to a handler.
    pub handled: AtomicU64,
    /// Messages the bot could not read (e.g. after the org revoked it).
    pub unreadable: AtomicU64,
    /// Handlers that failed.
    pub failed: AtomicU64,
    /// Webhook requests refused (bad signature, stale, malformed).
    pub refused: AtomicU64,
}

/// A bot: handlers over a service identity's session.
pub struct Bot {
    session: Arc<Session>,
    commands: HashMap<String, Arc<dyn Handler>>,
    fallback: Option<Arc<dyn Handler>>,
    files: Option<Arc<dyn Handler>>,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    stats: Stats,
}

impl Bot {
    /// A bot acting as `session`'s identity.
    pub fn new(session: Session) -> Self {
        Self {
            session: Arc::new(session),
            commands: HashMap::new(),
            fallback: None,
            files: None,
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            stats: Stats::default(),
        }
    }

    /// Handles `/<name> …` (slash-style commands; `name` without the slash).
    pub fn command(mut self, name: &str, h: impl Handler) -> Self {
        self.commands.insert(name.trim_start_matches('/').to_ascii_lowercase(), Arc::new(h));
        self
    }

    /// Handles every other message (not commands, not the bot's own).
    pub fn on_message(mut self, h: impl Handler) -> Self {
        self.fallback = Some(Arc::new(h));
        self
    }

    /// Handles every finished upload (`ctx.file` is the file id).
    pub fn on_file(mut self, h: impl Handler) -> Self {
        self.files = Some(Arc::new(h));
        self
    }

    /// The session (the bot's identity, its KMS channel).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles one decrypted event: the bot's own messages, non-text events and
    /// redeliveries are skipped; `/name args` goes to that command.
    pub async fn dispatch(&self, m: Message) {
        if !self.first_time(&m.id) || m.sender == *self.session.user_id() {
            return;
        }
        let text = match &m.content {
            Content::Text(t) => t.clone(),
            Content::FileReady => {
                let (Some(h), Some(file)) = (self.files.clone(), m.target.clone()) else { return };
                let ctx = Ctx {
                    message: m,
                    text: String::new(),
                    command: None,
                    args: String::new(),
                    file: Some(FileId::from(file.into_string())),
                    session: self.session.clone(),
                };
                self.run(h, ctx).await;
                return;
            }
            Content::Unreadable(why) => {
                self.stats.unreadable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(space = %m.space_id, event = %m.id, why = %why, "a message the bot cannot read");
                return;
            }
            _ => return,
        };
        let (command, args) = match text.strip_prefix('/') {
            Some(rest) => {
                let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                (Some(name.to_ascii_lowercase()), args.trim().to_string())
            }
            None => (None, text.clone()),
        };
        let handler = match &command {
            Some(c) => self.commands.get(c).or(self.fallback.as_ref()),
            None => self.fallback.as_ref(),
        };
        let Some(h) = handler.cloned() else { return };
        let ctx = Ctx { message: m, text, command, args, file: None, session: self.session.clone() };
        self.run(h, ctx).await;
    }

    async fn run(&self, h: Arc<dyn Handler>, ctx: Ctx) {
        self.stats.handled.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = h.call(ctx).await {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "a bot handler failed");
        }
    }

    fn first_time(&self, id: &str) -> bool {
        let mut s = self.seen.lock().expect("not poisoned");
        if !s.0.insert(id.to_string()) {
            return false;
        }
        s.1.push_back(id.to_string());
        if s.1.len() > SEEN {
            if let Some(old) = s.1.pop_front() {
                s.0.remove(&old);
            }
        }
        true
    }

    /// Socket mode: follows every space the bot is in (spaces it joins later
    /// too) over the core's WebSocket until an error the stream cannot
    /// recover from.
    pub async fn run_socket_mode(self: Arc<Self>) -> client::Result<()> {
        let session = self.session.clone();
        let mut live = session.live(HashMap::new()).await?;
        loop {
            let m = live.next().await?;
            self.dispatch(m).await;
        }
    }

    /// Registers `url` as the bot's webhook (replacing any); returns its signing secret.
    pub async fn register_webhook(&self, url: &str) -> client::Result<Zeroizing<String>> {
        self.session.set_webhook(url).await
    }

    /// The HTTP endpoint the core POSTs to (mount it at the registered URL's path, `/`).
    pub fn webhook_router(self: Arc<Self>, secret: Zeroizing<String>) -> axum::Router {
        let state = Arc::new((self, secret));
        axum::Router::new().route("/", axum::routing::post(webhook)).with_state(state)
    }
}

type HookState = Arc<(Arc<Bot>, Zeroizing<String>)>;

async fn webhook(State(state): State<HookState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let (bot, secret) = (&state.0, &state.1);
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    if let Err(e) = verify_signature(
        secret.as_bytes(),
        header("x-custos-request-timestamp"),
        header("x-custos-signature"),
        &body,
        now,
    ) {
        bot.stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(why = %e, "a webhook request was refused");
        return StatusCode::UNAUTHORIZED;
    }
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        event: CoreEvent,
    }
    let Ok(frame) = serde_json::from_slice::<Frame>(&body) else {
        bot.stats.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    if frame.kind != "event" {
        return StatusCode::OK;
    }
    // Answer now; the core would retry a slow answer.
    let bot = bot.clone();
    tokio::spawn(async move {
        let m = bot.session.decrypt(&frame.event).await;
        bot.dispatch(m).await;
    });
    StatusCode::OK
}

/// Why a webhook request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No or unparsable timestamp.
    #[error("missing or malformed X-Custos-Request-Timestamp")]
    Timestamp,
    /// Older or newer than [`MAX_SKEW_SECS`]: a replay or a skewed clock.
    #[error("the request is too old or from the future")]
    Stale,
    /// The signature is absent, of another version, or does not verify.
    #[error("the signature does not verify")]
    Signature,
}

/// Checks a webhook request: timestamp within [`MAX_SKEW_SECS`] of `now`
/// (Unix seconds) and `v1=` HMAC-SHA256 over `"v1:" + ts + ":" + body`,
/// compared in constant time.
pub fn verify_signature(secret: &[u8], ts: &str, sig: &str, body: &[u8], now: u64) -> Result<(), WebhookError> {
    let t: u64 = ts.parse().map_err(|_| WebhookError::Timestamp)?;
    if t.abs_diff(now) > MAX_SKEW_SECS {
        return Err(WebhookError::Stale);
    }
    let hex = sig.strip_prefix("v1=").ok_or(WebhookError::Signature)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(WebhookError::Signature);
    }
    let mut tag = [0u8; 32];
    for (i, b) in tag.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| WebhookError::Signature)?;
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut msg = format!("v1:{t}:").into_bytes();
    msg.extend_from_slice(body);
    aws_lc_rs::hmac::verify(&key, &msg, &tag).map_err(|_| WebhookError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3 -c 'import hmac,hashlib; print(hmac.new(b"secret", b"v1:1700000000:{\"a\":1}", hashlib.sha256).hexdigest())'
    const SIG: &str = "v1=17bb75ebc8e3db9f892e182dac08b5bd115c2a12570908248a7ed41d89710ec8";
    const BODY: &[u8] = br#"{"a":1}"#;

    #[test]
    fn verifies_an_independently_computed_signature() {
        assert_eq!(verify_signature(b"secret", "1700000000", SIG, BODY, 1_700_000_100), Ok(()));
    }

    #[test]
    fn refuses_what_it_should() {
        let now = 1_700_000_100;
        let v = |s: &[u8], ts: &str, sig: &str, body: &[u8], now| verify_signature(s, ts, sig, body, now);
        assert_eq!(v(b"other", "1700000000", SIG, BODY, now), Err(WebhookError::Signature));
        assert_eq!(v(b"secret", "1700000000", SIG, br#"{"a":2}"#, now), Err(WebhookError::Signature));
        assert_eq!(v(b"secret", "1700000001", SIG, BODY, now), Err(WebhookError::Signature), "timestamp is signed");
        assert_eq!(v(b"secret", "1700000000", SIG, BODY, 1_700_000_000 + 301), Err(WebhookError::Stale));
        assert_eq!(v(b"secret", "1700000000", SIG, BODY, 1_700_000_000 - 301), Err(WebhookError::Stale));
        assert_eq!(v(b"secret", "", SIG, BODY, now), Err(WebhookError::Timestamp));
        assert_eq!(v(b"secret", "-5", SIG, BODY, now), Err(WebhookError::Timestamp));
        assert_eq!(v(b"secret", "1700000000", &SIG.replace("v1=", "v0="), BODY, now), Err(WebhookError::Signature));
        assert_eq!(v(b"secret", "1700000000", &SIG[..60], BODY, now), Err(WebhookError::Signature));
        assert_eq!(v(b"secret", "1700000000", &SIG.replace('7', "z"), BODY, now), Err(WebhookError::Signature));
        assert_eq!(v(b"secret", "1700000000", "", BODY, now), Err(WebhookError::Signature));
        let multibyte = format!("v1={}é", "a".repeat(62));
        assert_eq!(v(b"secret", "1700000000", &multibyte, BODY, now), Err(WebhookError::Signature), "no panic");
    }
}
