//! Webhooks: the core POSTs every event of a bot's spaces to the bot's own
//! endpoint, signed the way Slack signs its requests, so that bots can run
//! without holding a socket open.
//!
//! - **Registration**: a user (normally a bot, with its client-credentials
//!   token) registers one URL for itself (`PUT /v1/webhook`) and gets a
//!   signing secret, once; registering again rotates it. The secret is
//!   derived from the core's webhook key (`<data_dir>/webhook.key`, 0600) and
//!   the registration, so no secret sits in a database row; nodes that deliver
//!   must share that file.
//! - **Requests**: `POST <url>`, body `{"type":"event","event":{…}}` (the same
//!   frame as `/v1/ws`: ciphertext and routing fields only), headers
//!   `X-Custos-Request-Timestamp` (Unix seconds), `X-Custos-Signature:
//!   v1=<hex HMAC-SHA256(secret, "v1:" + timestamp + ":" + body)>`,
//!   `X-Custos-Event-Id`, `X-Custos-Retry-Num` (0 on the first attempt).
//! - **Delivery**: per space in order, at least once (receivers dedupe by event
//!   id), starting with the event that added the bot. A 2xx answer moves the
//!   position (kept in the database, so a restart resumes); anything else
//!   (an error status, a timeout, a refused connection) is retried with
//!   backoff (1 s, 2 s, 4 s … at most 60 s) without skipping: nothing is lost.
//!   A removed bot gets nothing more of that space (its removal included:
//!   deliveries follow the spaces it is in).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use core_store::{Event, EventKind, Store, Webhook};
use tokio::sync::Notify;
use zeroize::Zeroizing;

/// Longest answer wait per delivery.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Events per database read.
const PAGE: u32 = 100;
/// How far back the event that added the bot is looked for (pages), when a space is new to its webhook.
const JOIN_SEARCH_PAGES: usize = 20;
/// Longest webhook URL.
pub const MAX_URL: usize = 1024;

/// The webhook key, the delivery state, and the HTTP client.
pub struct Webhooks {
    key: Zeroizing<Vec<u8>>,
    allow_http: bool,
    http: reqwest::Client,
    wake: Notify,
    /// Per webhook: attempts failed in a row, and when to try again.
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    in_flight: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("allow_http", &self.allow_http).finish_non_exhaustive()
    }
}

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub &'static str);

impl Webhooks {
    /// Opens (creating on first use) `<data_dir>/webhook.key`. `allow_http`:
    /// accept `http://` endpoints (development; production wants `https://`).
    pub fn open(data_dir: &Path, allow_http: bool) -> anyhow::Result<Self> {
        let path = data_dir.join("webhook.key");
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => Zeroizing::new(k),
            Ok(_) => anyhow::bail!("{} is not a 32-byte key", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                aws_lc_rs::rand::fill(&mut k).map_err(|_| anyhow::anyhow!("no randomness"))?;
                secretfile::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
                // Never replaced: core nodes sharing a data directory may start at
                // once, and the one key whose file appears first is everyone's.
                match secretfile::create_or_read(&path, &k).with_context(|| format!("writing {}", path.display()))? {
                    secretfile::Outcome::Created => k,
                    secretfile::Outcome::Existing(theirs) if theirs.len() == 32 => theirs,
                    secretfile::Outcome::Existing(_) => anyhow::bail!("{} is not a 32-byte key", path.display()),
                }
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the webhook HTTP client")?;
        Ok(Self {
            key,
            allow_http,
            http,
            wake: Notify::new(),
            backoff: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// Checks a URL a user wants events sent to.
    pub fn check_url(&self, url: &str) -> Result<(), BadUrl> {
        if url.len() > MAX_URL || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(BadUrl("the webhook url must be at most 1024 printable characters"));
        }
        let ok = url.starts_with("https://") || (self.allow_http && url.starts_with("http://"));
        if !ok {
            return Err(BadUrl(if self.allow_http {
                "the webhook url must start with https:// or http://"
            } else {
                "the webhook url must start with https://"
            }));
        }
        reqwest::Url::parse(url).map_err(|_| BadUrl("the webhook url is not a valid URL"))?;
        Ok(())
    }

    /// The signing secret of a registration (base64url, 32 bytes).
    pub fn secret(&self, w: &Webhook) -> Zeroizing<String> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.key);
        let input = format!("custos-webhook-v1\0{}\0{}\0{}", w.user_id, w.url, w.create_date);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Wakes the dispatcher (an event was committed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers until the process ends (spawn it).
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let hooks = match store.webhooks().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "reading webhooks failed");
                    continue;
                }
            };
            for w in hooks {
                if let Some((_, at)) = self.backoff.lock().expect("not poisoned").get(&w.user_id) {
                    if Instant::now() < *at {
                        continue;
                    }
                }
                if !self.in_flight.lock().expect("not poisoned").insert(w.user_id.clone()) {
                    continue;
                }
                let (me, store) = (self.clone(), store.clone());
                tokio::spawn(async move {
                    let user = w.user_id.clone();
                    let outcome = me.deliver_all(&*store, &w).await;
                    let mut b = me.backoff.lock().expect("not poisoned");
                    match outcome {
                        Ok(()) => {
                            b.remove(&user);
                        }
                        Err(why) => {
                            let n = b.get(&user).map_or(0, |(n, _)| *n) + 1;
                            let wait = Duration::from_secs(1u64 << (n - 1).min(6)).min(MAX_BACKOFF);
                            tracing::warn!(bot = %user, attempt = n, retry_in = ?wait, why = %why, "webhook delivery failed");
                            metrics::counter!("core_webhook_failures_total").increment(1);
                            b.insert(user.clone(), (n, Instant::now() + wait));
                        }
                    }
                    drop(b);
                    me.in_flight.lock().expect("not poisoned").remove(&user);
                });
            }
        }
    }

    /// Sends `w` everything due in each of its spaces; stops at the first failure.
    async fn deliver_all(&self, store: &dyn Store, w: &Webhook) -> Result<(), String> {
        let attempt = self.backoff.lock().expect("not poisoned").get(&w.user_id).map_or(0, |(n, _)| *n);
        let spaces = store.spaces_of(&w.user_id).await.map_err(|e| e.to_string())?;
        for s in spaces {
            let space = &s.space;
            let mut cursor = match store.webhook_cursor(&w.user_id, &space.id).await.map_err(|e| e.to_string())? {
                Some(c) => c,
                None => {
                    let start = join_position(store, &space.id, &w.user_id, space.last_seq).await?;
                    store.set_webhook_cursor(&w.user_id, &space.id, start).await.map_err(|e| e.to_string())?;
                    start
                }
            };
            while cursor < space.last_seq {
                let events = store.events_after(&space.id, cursor, PAGE).await.map_err(|e| e.to_string())?;
                if events.is_empty() {
                    break;
                }
                for e in events {
                    self.post(w, &e, attempt).await?;
                    metrics::counter!("core_webhook_deliveries_total").increment(1);
                    store.set_webhook_cursor(&w.user_id, &space.id, e.seq).await.map_err(|e| e.to_string())?;
                    cursor = e.seq;
                    // Stop after its own removal: nothing later is for it.
                    if e.kind == EventKind::MemberRemoved && e.subject.as_deref() == Some(w.user_id.as_str()) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    async fn post(&self, w: &Webhook, e: &Event, attempt: u32) -> Result<(), String> {
        let body = serde_json::to_vec(&serde_json::json!({"type": "event", "event": e})).map_err(|e| e.to_string())?;
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let secret = self.secret(w);
        let r = self
            .http
            .post(&w.url)
            .header("content-type", "application/json")
            .header("x-custos-request-timestamp", ts.to_string())
            .header("x-custos-signature", signature(secret.as_bytes(), ts, &body))
            .header("x-custos-event-id", e.id.as_str())
            .header("x-custos-retry-num", attempt.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "no answer in time".to_string() } else { "the request failed".into() })?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", r.status().as_u16()))
        }
    }
}

/// `v1=<hex HMAC-SHA256(secret, "v1:" + ts + ":" + body)>`: what a receiver recomputes and compares in constant time.
pub fn signature(secret: &[u8], ts: u64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(format!("v1:{ts}:").as_bytes());
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// Where a webhook starts in a space new to it: just before the event that
/// added its user (looked for among the latest pages), else now.
async fn join_position(store: &dyn Store, space: &str, user: &str, last_seq: i64) -> Result<i64, String> {
    let mut before = last_seq + 1;
    for _ in 0..JOIN_SEARCH_PAGES {
        let page = store.events_before(space, before, PAGE).await.map_err(|e| e.to_string())?;
        let Some(first) = page.iter().map(|e| e.seq).min() else { break };
        if let Some(join) = page
            .iter()
            .filter(|e| e.kind == EventKind::MemberAdded && e.subject.as_deref() == Some(user))
            .map(|e| e.seq)
            .max()
        {
            return Ok(join - 1);
        }
        before = first;
    }
    Ok(last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"secret", b"v1:1700000000:{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "v1=17bb75ebc8e3db9f892e182dac08b5bd115c2a12570908248a7ed41d89710ec8"
        );
    }

    #[test]
    fn urls_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let strict = Webhooks::open(dir.path(), false).unwrap();
        assert!(strict.check_url("https://bot.example/hook").is_ok());
        for bad in ["http://bot.example/hook", "ftp://x", "https://a b", "", "https://"] {
            assert!(strict.check_url(bad).is_err(), "{bad}");
        }
        assert!(strict.check_url(&format!("https://x.example/{}", "a".repeat(MAX_URL))).is_err());
        let dev = Webhooks::open(dir.path(), true).unwrap();
        assert!(dev.check_url("http://127.0.0.1:9/hook").is_ok());
        // The key persists (same secret after reopening), is private, and the secret depends on the registration.
        let w = Webhook { user_id: "bot@a.test".into(), url: "https://b/h".into(), create_date: 1 };
        assert_eq!(*strict.secret(&w), *dev.secret(&w));
        assert_ne!(*strict.secret(&w), *strict.secret(&Webhook { create_date: 2, ..w.clone() }));
        assert_ne!(*strict.secret(&w), *strict.secret(&Webhook { url: "https://b/i".into(), ..w.clone() }));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("webhook.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join("webhook.key"), b"short").unwrap();
        assert!(Webhooks::open(dir.path(), false).is_err(), "a damaged key is an error, not a new key");
    }

    #[test]
    fn nodes_opening_a_new_data_directory_at_once_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Barrier::new(6);
        let w = Webhook { user_id: "bot@a.test".into(), url: "https://b/h".into(), create_date: 1 };
        let secrets: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Webhooks::open(dir.path(), false).unwrap().secret(&w).to_string()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|p| p[0] == p[1]), "every node signs with the same key");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["webhook.key"]);
    }
}
